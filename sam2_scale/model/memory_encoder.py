"""Memory encoder: fuse a frame's raw stride-16 features with its predicted mask into a
64-channel memory (plus its sine position encoding)."""

import torch
import torch.nn as nn

from .layers import LayerNorm2d
from .position import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """4 x (conv 3x3 stride 2, LayerNorm2d, GELU), channels x4 each, then a 1x1 conv: /16."""

    def __init__(self, embed_dim=256, num_stages=4):
        super().__init__()
        self.encoder = nn.Sequential()
        channels = 1
        for _ in range(num_stages):
            self.encoder.append(nn.Conv2d(channels, channels * 4, kernel_size=3, stride=2, padding=1))
            self.encoder.append(LayerNorm2d(channels * 4))
            self.encoder.append(nn.GELU())
            channels *= 4
        self.encoder.append(nn.Conv2d(channels, embed_dim, kernel_size=1))

    def forward(self, x):
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm2d, pointwise MLP x4, layer scale, residual."""

    def __init__(self, dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x):
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim=256, num_layers=2):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, out_dim=64, in_dim=256):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat, masks, skip_mask_sigmoid=False):
        """pix_feat (B, 256, h, w); masks (B, 1, 16h, 16w), logits unless `skip_mask_sigmoid`
        says they are already scaled probabilities (SAM2Base always passes them so).
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
