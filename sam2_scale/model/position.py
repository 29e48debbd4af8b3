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
        self._dense_cache = {}

    def _encode(self, coords):
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, size):
        """Dense encoding of an (h, w) grid at cell centres: (C, h, w).

        It depends only on the (fixed) Gaussian matrix, so it is cached until that buffer
        changes (a checkpoint load) or the autocast setting the matmul runs under does.
        """
        gaussian = self.positional_encoding_gaussian_matrix
        device = gaussian.device
        autocast = device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type)
        autocast = autocast and torch.get_autocast_dtype(device.type)
        key = (tuple(size), str(device), gaussian.dtype, gaussian._version, gaussian.data_ptr(), autocast)
        cache = self._dense_cache
        if key not in cache:
            cache.clear()
            with torch.no_grad():
                h, w = size
                ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
                xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
                grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
                cache[key] = self._encode(grid).permute(2, 0, 1)
        return cache[key]

    def forward_with_coords(self, coords, image_size):
        """Encode pixel coordinates (B, N, 2) in (x, y) order for an image of (H, W)."""
        h, w = image_size
        coords = coords.float()
        # Python scalars, not a tensor of (w, h): no host-to-device copy on every decoder pass.
        scaled = coords / w if w == h else torch.stack((coords[..., 0] / w, coords[..., 1] / h), dim=-1)
        return self._encode(scaled)


def sine_1d(positions, dim, temperature=10000):
    """1-D sine encoding of float positions (...,) -> (..., dim): all sin, then all cos."""
    freqs = _sine_frequencies(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def axial_rope_table(head_dim, width, height, theta=10000.0, device=None):
    """Rotations (width*height, head_dim/2, 2) as (cos, sin) for a row-major (height, width) grid.

    The first half of the channel pairs rotates with the token's x, the second with its y.
    Real, not complex: compiled kernels (inductor) generate no code for complex arithmetic.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim))
    t = torch.arange(width * height, dtype=torch.float32, device=device)
    t_x = t % width
    t_y = torch.div(t, width, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_axial_rope(x, table):
    """Rotate adjacent channel pairs of x (..., N, head_dim) by `table` (N, head_dim/2, 2), which
    broadcasts over the leading dims (batch, heads, memory frames). Computed in fp32, returned
    in x's dtype."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = table[..., 0], table[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2).type_as(x)
