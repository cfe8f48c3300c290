"""The tokenizer: how an image becomes a sequence of tokens.

Two kinds, one class (the flags are those of the released code):

* **patches** (ViT-Lite, CVT): one conv whose kernel = stride = patch size, with bias, no
  activation, no pooling. Each p×p patch becomes one token: a 32×32 image with p=4 → 64 tokens.
* **convolutions** (CCT): ``n_conv_layers`` blocks of [k×k conv (no bias) → ReLU → max-pool(3, 2, 1)],
  64 filters in between and ``embedding_dim`` at the end. The convolutions overlap and keep local
  structure inside each token, which is what lets CCT drop the class token and the patch grid.

Either way the tokens are the flattened spatial positions of the last feature map:
(N, d, h, w) → (N, h·w, d). The sequence length h·w is computed from the conv and pool arithmetic
(``sequence_length``), never by pushing a dummy image through.
"""
from __future__ import annotations

from minicct import nn
from minicct.nn import init


class Tokenizer(nn.Module):
    """Image → tokens. x: (N, C, H, W) → (N, L, n_output_channels), L = ``sequence_length(H, W)``.

    conv_layers: a Sequential of ``n_conv_layers`` Sequentials (Conv2d, ReLU or Identity, MaxPool2d
    or Identity), so the first kernel is ``conv_layers.0.0.weight`` as in the official checkpoints.
    """

    def __init__(self, kernel_size, stride, padding, pooling_kernel_size=3, pooling_stride=2,
                 pooling_padding=1, n_conv_layers=1, n_input_channels=3, n_output_channels=64,
                 in_planes=64, activation=None, max_pool=True, conv_bias=False):
        super().__init__()
        if n_conv_layers < 1:
            raise ValueError(f"the tokenizer needs at least one conv layer, got n_conv_layers={n_conv_layers}")
        widths = [n_input_channels] + [in_planes] * (n_conv_layers - 1) + [n_output_channels]
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], kernel_size, stride=stride, padding=padding,
                          bias=conv_bias),
                activation() if activation is not None else nn.Identity(),
                nn.MaxPool2d(pooling_kernel_size, pooling_stride, pooling_padding) if max_pool
                else nn.Identity(),
            )
            for i in range(n_conv_layers)])
        # He init keeps the activations' scale through the ReLUs. A patch conv's bias keeps
        # PyTorch's default uniform init, as in the released code (it only re-inits conv weights).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"the tokenizer expects images (N, C, H, W), got shape {tuple(x.shape)}")
        y = x
        for conv, activation, pool in self.conv_layers:
            # ReLU and max-pooling commute (ReLU never changes which value is largest), so pooling
            # first gives the same outputs and gradients, with the ReLU on 4x fewer values and
            # the conv output freed as soon as it is pooled.
            y = activation(pool(conv(y)))                     # (N, d, h, w) after the last block
        n, d, h, w = y.shape
        # Token t = i·w + j is pixel (i, j), its features the d channels. Moving the channels last
        # first makes this a free view when the conv left its output channels-last in memory;
        # one copy then lays the tokens out image by image for the transformer (a no-op if they
        # already are; the fast conv on NumPy leaves them as (h, w, N, d)).
        return y.permute(0, 2, 3, 1).reshape(n, h * w, d).contiguous()     # (N, h·w, d)

    def feature_size(self, height, width):
        """(h, w) of the last feature map for an (height, width) image; ValueError when a conv or a
        pool does not fit (the image is too small for this tokenizer)."""
        h, w = height, width
        for i, block in enumerate(self.conv_layers):
            for layer in block:
                if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                    try:
                        h, w = layer.output_size(h, w)
                    except ValueError as e:
                        raise ValueError(f"a {height}x{width} image is too small for this tokenizer: "
                                         f"in conv block {i}, {e}") from None
        return h, w

    def sequence_length(self, height, width):
        """Number of tokens for an (height, width) image: h·w of the last feature map."""
        h, w = self.feature_size(height, width)
        return h * w

