"""The training-curves PNG: a short run's points stand inside the chart and can be read."""
import numpy as np
from PIL import Image

from minicct.training.curves import PANEL_W, MARGIN_L, MARGIN_R, draw_curves, x_range


def _coloured_columns(path, colour):
    """x positions (pixels) of the columns that contain the series colour (first panel only)."""
    a = np.asarray(Image.open(path).convert("RGB"))[:, :PANEL_W].astype(int)
    hit = (np.abs(a - np.array(colour)).sum(-1) < 30).any(0)
    return np.flatnonzero(hit)


def test_one_epoch_run_is_a_visible_point_in_the_middle(tmp_path):
    path = tmp_path / "c.png"
    draw_curves(path, [1], [("loss", {"train": [2.0]}), ("test accuracy %", {"top-1": [30.0]})])
    cols = _coloured_columns(path, (31, 119, 180))
    left, right = MARGIN_L, PANEL_W - MARGIN_R
    plot = cols[(cols > left + 2) & (cols < right - 2) & (cols < right - 100)]   # leave the legend out
    assert len(plot) >= 6, "the single point should be drawn as a marker a few pixels wide"
    centre = plot.mean()
    assert abs(centre - (left + right) / 2) < 15, "a one-epoch run's point belongs in the middle of the axis"


def test_x_range():
    assert x_range([1]) == (0.5, 1.5, [1])
    assert x_range([1, 2]) == (0.5, 2.5, [1, 2])
    lo, hi, ticks = x_range(list(range(1, 31)))
    assert lo <= 1 and hi >= 30 and all(float(t).is_integer() for t in ticks)


def test_titles_keep_their_word_gaps(tmp_path):
    """Pillow's default font draws a space 2 px wide ("testaccuracy %"): titles are drawn wider."""
    from PIL import ImageDraw, ImageFont
    from minicct.training.curves import _text
    font = ImageFont.load_default()
    widths = []
    for s in ("test accuracy", "testaccuracy"):
        img = Image.new("L", (300, 30), 255)
        _text(ImageDraw.Draw(img), (0, 5), s, font)
        ink = np.flatnonzero((np.asarray(img) < 128).any(0))
        widths.append(ink[-1] - ink[0])
    assert widths[0] - widths[1] >= 5
