"""Small building blocks shared by several SAM 2.1 modules."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """`num_layers` Linear layers with an activation between them (not after the last).

    Stored as `layers.{i}` so the state-dict keys match the released checkpoints.
    """

    def __init__(self, in_dim, hidden_dim, out_dim, num_layers, activation=nn.ReLU, sigmoid_output=False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor.

    Deliberately not an `nn.LayerNorm` subclass: the reference recipe exempts only
    `nn.LayerNorm` parameters from weight decay, and these are decayed.
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        # One fused layer_norm over a channels-last view instead of six elementwise kernels.
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, rescaling the kept ones.

    Compiled, the keep probability is a (non-persistent) tensor: a compiled block would specialise
    on a Python float, and every block of the trunk has its own rate. Eager, it is the float, whose
    draws match the reference's random stream.
    """

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob
        self.drops = drop_prob > 0  # a bool the compiler may guard on; the rate itself it must not
        self.register_buffer("keep_prob", torch.tensor(1.0 - drop_prob), persistent=False)

    def forward(self, x):
        if not self.drops or not self.training:
            return x
        keep_prob = self.keep_prob if torch.compiler.is_compiling() else 1.0 - self.drop_prob
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * keep.div_(keep_prob)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def trunc_normal_(tensor, std=0.02):
    """Truncated normal at +-2 (absolute), as the reference initialises its learned tokens."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2.0, b=2.0)


def upsample_bilinear(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def downsample_antialias(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
