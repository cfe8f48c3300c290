"""The training curves as a PNG, drawn with Pillow (no matplotlib): loss on the left, accuracy on the right.

    draw_curves("runs/x/curves.png", epochs=[0, 1, 2], panels=[
        ("loss", {"train": [2.1, 1.7, 1.5], "test": [1.9, 1.6, 1.4]}),
        ("accuracy %", {"top-1": [30, 45, 52], "top-5": [80, 90, 93]})])
"""
from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

from minicct.formats.files import atomic_write

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
PANEL_W, PANEL_H = 460, 340
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 14, 30, 40


def nice_ticks(lo, hi, n=5):
    """About n round numbers (1, 2 or 5 × 10^k apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def _label(v):
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}"


def _draw_panel(draw, font, x0, y0, title, epochs, series):
    """One chart in the box (x0, y0, x0 + PANEL_W, y0 + PANEL_H). series: {name: [value per epoch]}."""
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    right, bottom = x0 + PANEL_W - MARGIN_R, y0 + PANEL_H - MARGIN_B
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not values or not epochs:
        draw.text((left, top), f"{title}: no data yet", fill="black", font=font)
        return
    yt = nice_ticks(min(values), max(values))
    xt = nice_ticks(min(epochs), max(max(epochs), min(epochs) + 1), n=6)
    xt = [t for t in xt if float(t).is_integer()] or xt
    ylo, yhi, xlo, xhi = yt[0], yt[-1], xt[0], xt[-1]

    def px(e, v):
        return (left + (e - xlo) / (xhi - xlo) * (right - left),
                bottom - (v - ylo) / (yhi - ylo) * (bottom - top))

    for t in yt:  # horizontal grid and y labels
        _, y = px(xlo, t)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((left - 6, y), _label(t), fill="black", font=font, anchor="rm")
    for t in xt:
        x, _ = px(t, ylo)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 6), _label(t), fill="black", font=font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 22), "epoch", fill="black", font=font, anchor="ma")
    draw.text((left, y0 + 8), title, fill="black", font=font)

    for i, (name, vs) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [px(e, v) for e, v in zip(epochs, vs) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        lx = right - 70 * (len(series) - i)  # legend in the header, right of the title: never on a line
        ly = y0 + 8
        draw.line([(lx, ly + 5), (lx + 16, ly + 5)], fill=colour, width=2)
        draw.text((lx + 20, ly), name, fill="black", font=font)


def draw_curves(path, epochs, panels):
    """Write a PNG with one chart per panel, side by side. panels: [(title, {series name: values})]."""
    img = Image.new("RGB", (PANEL_W * len(panels), PANEL_H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (title, series) in enumerate(panels):
        _draw_panel(draw, font, i * PANEL_W, 0, title, list(epochs), series)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
