"""The position encodings of SAM 2.1.

- `PositionEmbeddingSine`: 2-D sine/cosine maps for the FPN levels and the memories.
- `PositionEmbeddingRandom`: random Fourier features for prompts and the decoder's image PE.
- `axial_rope_table` / `apply_axial_rope`: rotary encoding used by memory attention.
- `sine_1d`: the temporal encoding of object pointers.
"""

import math

import torch
import torch.nn as nn


def _sine_frequencies(num_feats, temperature, device):
    # Channel pairs (2i, 2i+1) share one frequency.
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine encoding with `num_pos_feats` channels (half for y, then half for x).

    Within each half, even channels carry sin and odd channels cos. Positions 1..H are
    normalised to (0, 2*pi]. The map depends only on (H, W), so it is cached per size.
    """

    def __init__(self, num_pos_feats, temperature=10000):
        super().__init__()
        assert num_pos_feats % 2 == 0
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache = {}

    def _interleave(self, pos):
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    @torch.no_grad()
    def encode(self, h, w, device):
        key = (h, w, str(device))
        if key not in self._cache:
            eps = 1e-6
            y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
            y = y / (h + eps) * self.scale
            x = x / (w + eps) * self.scale
            freqs = _sine_frequencies(self.num_pos_feats, self.temperature, device)
            pos_y = self._interleave(y[:, None] / freqs)  # (h, C/2)
            pos_x = self._interleave(x[:, None] / freqs)  # (w, C/2)
            pos = torch.cat((pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1)
            self._cache[key] = pos.permute(2, 0, 1).contiguous()
        return self._cache[key]

    def forward(self, x):
        """Encoding for a feature map `x` (B, C, H, W): (B, num_pos_feats, H, W), fp32."""
        pos = self.encode(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of coordinates in [0, 1]^2 (sin block, then cos block).

    The Gaussian matrix is a persistent buffer: released checkpoints carry it.
    """

    def __init__(self, num_pos_feats=128):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _encode(self, coords):
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, size):
        """Dense encoding of an (h, w) grid at cell centres: (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords, image_size):
        """Encode pixel coordinates (B, N, 2) in (x, y) order for an image of (H, W)."""
        h, w = image_size
        scale = torch.tensor([w, h], dtype=torch.float32, device=coords.device)
        return self._encode(coords.float() / scale)


def sine_1d(positions, dim, temperature=10000):
    """1-D sine encoding of float positions (...,) -> (..., dim): all sin, then all cos."""
    freqs = _sine_frequencies(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def axial_rope_table(head_dim, width, height, theta=10000.0, device=None):
    """Complex rotations (width*height, head_dim/2) for a row-major (height, width) grid.

    The first half of the complex pairs rotates with the token's x, the second with its y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim))
    t = torch.arange(width * height, dtype=torch.float32, device=device)
    t_x = t % width
    t_y = torch.div(t, width, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_axial_rope(x, table, repeat=1):
    """Rotate adjacent channel pairs of x (B, heads, N, head_dim) by `table`.

    `repeat > 1` tiles the table along the sequence, for keys that hold several memory
    frames of the same grid. Computed in fp32, returned in x's dtype.
    """
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    if repeat > 1:
        table = table.repeat(repeat, 1)
    out = torch.view_as_real(xc * table).flatten(-2)
    return out.type_as(x)
