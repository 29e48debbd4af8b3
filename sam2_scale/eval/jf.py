"""Region similarity J and boundary accuracy F of binary masks, with the conventions of DAVIS
(`davis2017-evaluation`): J is IoU, an empty ground truth predicted empty scoring 1; F is the
F-measure of one-pixel boundary maps matched within a disk of ceil(0.008 x image diagonal) pixels.
"""

import math

import torch
import torch.nn.functional as F


def _batched(mask):
    mask = torch.as_tensor(mask, dtype=torch.bool)
    return mask if mask.ndim == 3 else mask[None]


def _per_mask(scores, like):
    return scores if torch.as_tensor(like).ndim == 3 else scores[0]


def jaccard(pred, gt):
    """Region similarity J of bool masks (H, W) or (N, H, W); an empty GT predicted empty scores 1."""
    pred_b, gt_b = _batched(pred), _batched(gt)
    inter = (pred_b & gt_b).flatten(1).sum(1)
    union = (pred_b | gt_b).flatten(1).sum(1)
    return _per_mask(torch.where(union > 0, inter / union.clamp_min(1), 1.0), pred)


def boundary_map(masks):
    """DAVIS `seg2bmap` of bool (N, H, W): a pixel is on the boundary when it differs from its east,
    south or south-east neighbour. The last row compares east only and the last column south only,
    so the right and bottom image borders are not boundaries."""
    padded = F.pad(masks, (0, 1, 0, 1))
    east, south, south_east = padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]
    boundary = (masks ^ east) | (masks ^ south) | (masks ^ south_east)
    boundary[:, -1, :] = masks[:, -1, :] ^ east[:, -1, :]
    boundary[:, :, -1] = masks[:, :, -1] ^ south[:, :, -1]
    boundary[:, -1, -1] = False
    return boundary


def _dilate(boundary, radius):
    """Binary dilation of (N, H, W) by skimage's `disk(radius)`, the structuring element DAVIS uses.

    The disk is a stack of rows: row dy reaches isqrt(radius² - dy²) pixels either side. Rows are
    widened one pixel at a time and each is OR-ed in once at its width, O(radius) passes in all
    (a 2-D convolution takes minutes per clip at 1024² on a CPU)."""
    height, width = boundary.shape[-2:]
    widened = F.pad(boundary, (radius, radius, radius, radius))
    dilated = torch.zeros_like(boundary)
    for half_width in range(radius + 1):
        if half_width:
            widened = widened | F.pad(widened[..., 1:], (0, 1)) | F.pad(widened[..., :-1], (1, 0))
        for dy in range(-radius, radius + 1):
            if math.isqrt(radius**2 - dy**2) == half_width:
                dilated |= widened[:, radius + dy : radius + dy + height, radius : radius + width]
    return dilated


def boundary_f(pred, gt, bound_th=0.008):
    """Boundary F-measure of bool masks (H, W) or (N, H, W). bound_th < 1 is a fraction of the image
    diagonal (rounded up to whole pixels, as DAVIS does); bound_th >= 1 is a distance in pixels.
    An empty boundary has precision (prediction) or recall (GT) 1, so two empty masks score 1."""
    pred_b, gt_b = _batched(pred), _batched(gt)
    height, width = pred_b.shape[-2:]
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width)))
    pred_boundary, gt_boundary = boundary_map(pred_b), boundary_map(gt_b)
    pred_matched = (pred_boundary & _dilate(gt_boundary, radius)).flatten(1).sum(1)
    gt_matched = (gt_boundary & _dilate(pred_boundary, radius)).flatten(1).sum(1)
    num_pred, num_gt = pred_boundary.flatten(1).sum(1), gt_boundary.flatten(1).sum(1)
    precision = torch.where(num_pred > 0, pred_matched / num_pred.clamp_min(1), 1.0)
    recall = torch.where(num_gt > 0, gt_matched / num_gt.clamp_min(1), 1.0)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return _per_mask(f, pred)
