"""FPN neck and the image encoder (trunk + neck) that SAM2Base calls."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .position import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """1x1 lateral convs to `d_model`, with a nearest-neighbour top-down path only into the
    levels in `fpn_top_down_levels` (SAM 2.1: strides 16 and 32; strides 4 and 8 stay lateral).
    """

    def __init__(self, d_model, backbone_channel_list, fpn_top_down_levels=(2, 3)):
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.fpn_top_down_levels = list(fpn_top_down_levels)
        self.position_encoding = PositionEmbeddingSine(d_model)
        # convs[0] reads the deepest (stride-32) map.
        self.convs = nn.ModuleList()
        for channels in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(lateral)

    def forward(self, trunk_feats):
        """trunk_feats: stride 4, 8, 16, 32 maps. Returns (features, pos) in the same order."""
        n = len(self.convs) - 1
        features, pos = [None] * (n + 1), [None] * (n + 1)
        above = None
        for level in range(n, -1, -1):
            x = self.convs[n - level](trunk_feats[level])
            if level in self.fpn_top_down_levels and above is not None:
                # Upsampled in fp32 so the sum is not rounded twice under bf16 autocast.
                x = x + F.interpolate(above.to(torch.float32), scale_factor=2.0, mode="nearest")
            above = x
            features[level] = x
            pos[level] = self.position_encoding(x).to(x.dtype)
        return features, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; `scalp` drops that many of the lowest-resolution levels from the output."""

    def __init__(self, trunk, neck, scalp=1):
        super().__init__()
        if trunk.channel_list != neck.backbone_channel_list:
            raise ValueError(f"trunk channels {trunk.channel_list} != neck channels {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images):
        features, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
