"""Prompt encoder: points and boxes to sparse tokens, a mask to a dense embedding."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LayerNorm2d
from .position import PositionEmbeddingRandom

# Point labels: -1 padding, 0 negative click, 1 positive click, 2/3 box corners.
PAD_LABEL = -1


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim, image_embedding_size, input_image_size, mask_in_chans=16):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self):
        """(1, C, h, w) encoding of the image-embedding grid, for the decoder's image keys."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords, labels, pad):
        coords = coords + 0.5  # pixel centres
        if pad:
            # Without a box, a padding point is appended (so one click gives two tokens).
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -torch.ones(labels.shape[0], 1, device=labels.device, dtype=labels.dtype)], dim=1)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        # One lookup for every label (row 0: padding, rows 1-4: labels 0-3) instead of a pass per
        # label; padding points carry no position encoding.
        tables = torch.cat([self.not_a_point_embed.weight] + [e.weight for e in self.point_embeddings])
        label_emb = F.embedding(labels.long() + 1, tables)
        return torch.where(labels.unsqueeze(-1) == PAD_LABEL, 0.0, emb) + label_emb

    def _embed_boxes(self, boxes):
        corners = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        corner_tables = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return corners + corner_tables

    def forward(self, points, boxes, masks, pad=None):
        """points: (coords (B, N, 2) in input-image pixels (x, y), labels (B, N)) or None;
        boxes: (B, 4) xyxy or None; masks: (B, 1, 4h, 4w) logits or None; pad: append a padding
        point to `points` (default: when there is no box, as the released model does).

        Returns sparse (B, N', C) and dense (B, C, h, w) embeddings.
        """
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        device = self.point_embeddings[0].weight.device
        sparse = [torch.empty((batch, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None if pad is None else pad))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse = torch.cat(sparse, dim=1)

        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
