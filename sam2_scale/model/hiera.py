"""Hiera image trunk (hierarchical ViT with windowed attention and q-pooling).

Tokens stay channels-last (B, H, W, C) through the trunk. The outputs are the feature maps at
the end of each of the four stages (strides 4, 8, 16, 32), channels-first.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import checkpoint
from .layers import MLP, DropPath


def window_partition(x, window):
    """(B, H, W, C) -> (B * nWindows, window, window, C), zero-padding H and W up to a multiple.

    No attention mask is used afterwards: padded tokens take part as keys and values, as in
    the released model.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    nh, nw = hp // window, wp // window
    x = x.view(b, nh, window, nw, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, window, window, c), (hp, wp)


def window_unpartition(windows, b, window, padded_hw, hw):
    """Inverse of `window_partition` for a batch of `b`, cropping the padding."""
    hp, wp = padded_hw
    h, w = hw
    c = windows.shape[-1]
    x = windows.reshape(b, hp // window, wp // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def maxpool_channels_last(x, pool):
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Conv 7x7 stride 4 to `embed_dim` channels, returned channels-last."""

    def __init__(self, embed_dim, in_chans=3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head attention whose queries may be max-pooled (q-pooling) to shrink the grid."""

    def __init__(self, dim, dim_out, num_heads, q_pool=None):
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x):
        b, h, w, _ = x.shape
        head_dim = self.dim_out // self.num_heads
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, head_dim).unbind(2)
        if self.q_pool is not None:
            q = maxpool_channels_last(q.reshape(b, h, w, self.dim_out), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, head_dim)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, self.dim_out))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; a q-pool block also changes width and halves the grid."""

    def __init__(self, dim, dim_out, num_heads, drop_path=0.0, q_stride=None, window_size=0, mlp_ratio=4.0):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            # The widened shortcut is taken from the *normed* input, then pooled.
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = maxpool_channels_last(shortcut, self.pool)

        window = self.window_size
        b, h, w = x.shape[:3]
        if window > 0:
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if self.q_stride:
            # q-pooling shrank every window: un-partition with the pooled window size.
            window = self.window_size // self.q_stride[0]
            h, w = shortcut.shape[1:3]
            padded_hw = (h + (-h % window), w + (-w % window)) if window > 0 else None
        if self.window_size > 0:
            x = window_unpartition(x, b, window, padded_hw, (h, w))

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Hiera(nn.Module):
    def __init__(
        self,
        embed_dim=96,
        num_heads=1,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_spec=(8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size=(14, 14),
        drop_path_rate=0.0,
        q_pool=3,
        q_stride=(2, 2),
        activation_checkpointing=False,
    ):
        super().__init__()
        depth = sum(stages)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.window_spec = tuple(window_spec)
        self.global_att_blocks = tuple(global_att_blocks)
        self.activation_checkpointing = activation_checkpointing

        self.patch_embed = PatchEmbed(embed_dim)
        # Windowed absolute position embedding: a coarse background embedding interpolated to
        # the grid, plus one window-sized embedding tiled over it.
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        drop_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList()
        dim, stage = embed_dim, 0
        for i in range(depth):
            # A block uses the window of the stage it starts in, so a q-pool block still
            # partitions with the previous stage's window.
            window = 0 if i in self.global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, num_heads, stage = dim * 2, num_heads * 2, stage + 1
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    num_heads,
                    drop_path=drop_rates[i],
                    q_stride=q_stride if i in self.q_pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        # Deepest first, the order the FPN neck expects.
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, h, w):
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile([1, 1, h // win.shape[-2], w // win.shape[-1]])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x):
        x = self.patch_embed(x)
        x = x + self._pos_embed(*x.shape[1:3])
        outputs = []
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            x = checkpoint(block, x) if use_ckpt else block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def get_layer_id(self, name):
        """Depth index for layer-wise lr decay: embeddings 0, blocks.i -> i+1, others L+1."""
        if "pos_embed" in name or "patch_embed" in name:
            return 0
        if "blocks." in name:
            return int(name.split("blocks.")[1].split(".")[0]) + 1
        return len(self.blocks) + 1

    def get_num_layers(self):
        return len(self.blocks)
