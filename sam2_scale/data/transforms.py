"""Clip augmentations with the reference semantics, computed as one warp per frame.

Reference order (consistent = one draw for the whole clip): horizontal flip (p 0.5, consistent)
-> random affine (rotation +-25 deg, x-shear +-20 deg, about the centre, consistent; skipped for
the clip if an object's frame-0 mask would vanish) -> square resize to the model resolution ->
colour jitter (consistent) -> grayscale (p 0.05, consistent) -> colour jitter (per frame) ->
normalise. Flip, affine and resize are all linear maps of pixel coordinates, so they are fused
into a single `grid_sample` at the output resolution (images bilinear, masks nearest), after an
antialiased resize to the output size so large images do not alias. Resizing first changes the
coordinate frame, so the affine is conjugated by the resize: the geometry equals the reference's.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AFFINE_FILL = (123 / 255, 116 / 255, 103 / 255)  # the reference's fill for uncovered pixels
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class AugmentConfig:
    hflip_prob: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    brightness: float = 0.1  # clip-consistent jitter
    contrast: float = 0.03
    saturation: float = 0.03
    grayscale_prob: float = 0.05
    frame_brightness: float = 0.1  # per-frame jitter
    frame_contrast: float = 0.05
    frame_saturation: float = 0.05
    enabled: bool = True  # False: resize + normalise only (evaluation)


def affine_matrix(angle, shear_x, flip, width, height):
    """3x3 forward map of pixel coordinates (x, y) of a width x height image: the horizontal
    flip, then rotation and x-shear about the image centre, composed as torchvision builds its
    affine (rotation R(a) times shear [[1, -tan(sx)], [0, 1]], no scale or translation)."""
    a, sx = math.radians(angle), math.radians(shear_x)
    rotate_shear = np.array(
        [
            [math.cos(a), -math.cos(a) * math.tan(sx) - math.sin(a), 0.0],
            [math.sin(a), -math.sin(a) * math.tan(sx) + math.cos(a), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    to_centre = np.array([[1, 0, -width * 0.5], [0, 1, -height * 0.5], [0, 0, 1.0]])
    forward = np.linalg.inv(to_centre) @ rotate_shear @ to_centre
    if flip:
        forward = forward @ np.array([[-1, 0, width], [0, 1, 0], [0, 0, 1.0]])
    return forward


def conjugate_by_resize(forward, width, height, size):
    """The same geometric map expressed on the image after a (non-uniform) resize to size x size."""
    scale = np.diag([size / width, size / height, 1.0])
    return scale @ forward @ np.linalg.inv(scale)


def _sample_grid(forward, size):
    """grid_sample grid for an output of size x size given the forward map at that size."""
    inverse = np.linalg.inv(forward)
    # Pixel centres of the output, mapped back into the input, in align_corners=False units.
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    ones = torch.ones_like(xs)
    src = torch.einsum("ij,jhw->ihw", torch.from_numpy(inverse), torch.stack([xs, ys, ones]))
    grid = torch.stack([src[0] / size * 2 - 1, src[1] / size * 2 - 1], dim=-1)
    return grid.float().unsqueeze(0)


def _grayscale(img):
    w = torch.tensor(GRAY_WEIGHTS, dtype=img.dtype).view(3, 1, 1)
    return (img * w).sum(0, keepdim=True)


def _jitter(img, brightness, contrast, saturation, order):
    for op in order:
        if op == 0 and brightness is not None:
            img = (img * brightness).clamp(0, 1)
        elif op == 1 and contrast is not None:
            mean = _grayscale(img).mean()
            img = (img * contrast + mean * (1 - contrast)).clamp(0, 1)
        elif op == 2 and saturation is not None:
            img = (img * saturation + _grayscale(img) * (1 - saturation)).clamp(0, 1)
    return img


def _jitter_params(rng, b, c, s):
    """Factors uniform in [1 - x, 1 + x], applied in a random order (torchvision's ColorJitter)."""
    order = [int(i) for i in rng.permutation(4)]
    draw = lambda x: float(rng.uniform(max(0.0, 1 - x), 1 + x)) if x > 0 else None  # noqa: E731
    return draw(b), draw(c), draw(s), order


class ClipAugment:
    """frames: list of uint8 (H, W, 3); masks: bool (T, O, H, W) -> (T, 3, S, S) float normalised,
    (T, O, S, S) bool."""

    def __init__(self, resolution, cfg=None):
        self.size = resolution
        self.cfg = cfg or AugmentConfig()
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, frames, masks, rng):
        cfg, size = self.cfg, self.size
        height, width = frames[0].shape[:2]
        images = [self._resize_image(f) for f in frames]  # (3, S, S) float in [0, 1]
        mask_t = self._resize_masks(masks)  # (T, O, S, S) float 0/1
        if cfg.enabled:
            flip = rng.random() < cfg.hflip_prob
            angle = float(rng.uniform(-cfg.degrees, cfg.degrees))
            shear = float(rng.uniform(-cfg.shear, cfg.shear))
            # Drawn at the source resolution (as the reference applies it), used after the resize.
            forward = conjugate_by_resize(affine_matrix(angle, shear, flip, width, height), width, height, size)
            warped_first = self._warp(mask_t[0], forward, "nearest") if masks.shape[1] else None
            if warped_first is not None and not bool((warped_first.flatten(1) > 0.5).any(dim=1).all()):
                # An object would vanish from frame 0: the reference then skips the affine (the
                # flip, an earlier transform, stays).
                forward = conjugate_by_resize(affine_matrix(0.0, 0.0, flip, width, height), width, height, size)
            images = [self._warp(img, forward, "bilinear", fill=AFFINE_FILL) for img in images]
            mask_t = torch.stack([self._warp(m, forward, "nearest") for m in mask_t]) if masks.shape[1] else mask_t
            b, c, s, order = _jitter_params(rng, cfg.brightness, cfg.contrast, cfg.saturation)
            gray = rng.random() < cfg.grayscale_prob
            out = []
            for img in images:
                img = _jitter(img, b, c, s, order)
                if gray:
                    img = _grayscale(img).expand(3, -1, -1)
                img = _jitter(img, *_jitter_params(rng, cfg.frame_brightness, cfg.frame_contrast, cfg.frame_saturation))
                out.append(img)
            images = out
        frames_t = torch.stack([(img - self.mean) / self.std for img in images])
        return frames_t, mask_t > 0.5

    def _resize_image(self, frame):
        img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255).unsqueeze(0)
        img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return img[0].clamp_(0, 1)

    def _resize_masks(self, masks):
        t, o = masks.shape[:2]
        if o == 0:
            return torch.zeros(t, 0, self.size, self.size)
        m = torch.from_numpy(np.ascontiguousarray(masks)).float().reshape(t * o, 1, *masks.shape[2:])
        m = F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        return (m > 0.5).float().reshape(t, o, self.size, self.size)

    def _warp(self, x, forward, mode, fill=None):
        """x (C, S, S) warped by the forward map; uncovered pixels take `fill` (or 0)."""
        grid = _sample_grid(forward, self.size)
        out = F.grid_sample(x.unsqueeze(0), grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
        if fill is not None:
            covered = F.grid_sample(torch.ones_like(x[:1]).unsqueeze(0), grid, mode=mode, align_corners=False)[0]
            out = out + (1 - covered) * torch.tensor(fill, dtype=out.dtype).view(-1, 1, 1)
        return out
