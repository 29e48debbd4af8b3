"""Clip augmentations with the reference semantics, computed as one warp per frame.

Reference order (consistent = one draw for the whole clip): horizontal flip (p 0.5, consistent)
-> random affine (rotation +-25 deg, x-shear +-20 deg, about the centre, consistent; skipped for
the clip if an object's frame-0 mask would vanish) -> square resize to the model resolution ->
colour jitter (consistent) -> grayscale (p 0.05, consistent) -> colour jitter (per frame) ->
normalise. Flip, affine and resize are all linear maps of pixel coordinates, so they are fused
into one sampling grid per clip at the output resolution: images are resized (antialiased, so
large images do not alias) and warped bilinearly by it, masks are sampled by its nearest source
pixels straight from the source resolution. The affine is drawn in source pixel coordinates, as
the reference applies it before resizing, so the geometry equals the reference's.
"""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config.schema import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AFFINE_FILL = (123 / 255, 116 / 255, 103 / 255)  # the reference's fill for uncovered pixels
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


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


def sampling_grid(forward, width, height, size):
    """grid_sample grid (1, S, S, 2) of the output pixels in the source image's normalised
    coordinates. With align_corners=False normalised coordinates do not depend on resolution,
    so one grid serves the source-size masks and the resized image alike."""
    out_to_pixels = np.array([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1.0]])
    resized_to_source = np.diag([width / size, height / size, 1.0])
    source_to_normalised = np.array([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1.0]])
    theta = source_to_normalised @ np.linalg.inv(forward) @ resized_to_source @ out_to_pixels
    theta = torch.from_numpy(theta[:2]).float().unsqueeze(0)
    return F.affine_grid(theta, (1, 1, size, size), align_corners=False)


def nearest_indices(grid, width, height):
    """Flat source index of the pixel nearest grid_sample picks for each output pixel; pixels
    outside the source point at index width*height (an appended zero)."""
    g = grid[0].numpy()
    ix = np.rint(((g[..., 0] + 1) * width - 1) / 2)
    iy = np.rint(((g[..., 1] + 1) * height - 1) / 2)
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    return np.where(inside, iy * width + ix, width * height).astype(np.int64).ravel()


def _jitter_params(rng, b, c, s):
    """Factors uniform in [1 - x, 1 + x], applied in a random order (torchvision's ColorJitter)."""
    order = [int(i) for i in rng.permutation(4)]
    draw = lambda x: float(rng.uniform(max(0.0, 1 - x), 1 + x)) if x > 0 else None  # noqa: E731
    return draw(b), draw(c), draw(s), order


def _gray_mean(img, weights):
    return float(img.mean(dim=(1, 2)) @ weights)


def normalize_frames(frames):
    """uint8 (..., 3, H, W) -> float, normalised with the ImageNet mean and std."""
    mean, std = _imagenet_stats(frames.device)
    return frames.float().div_(255).sub_(mean).div_(std)


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device):
    # Built once per device: a tensor made from Python numbers is a blocking copy to a GPU.
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    return mean, std


class ClipAugment:
    """frames: list of uint8 (H, W, 3); masks: bool (T, O, H, W) -> (T, 3, S, S) uint8,
    (T, O, S, S) bool.

    Frames leave as uint8, like the reference's PIL images before `ToTensor`: four times less
    to copy from loader workers; `normalize_frames` (in collate) makes them model input.

    Work happens at the output resolution on as few passes as possible: an antialiased resize
    of the uint8 frame, one bilinear warp per frame with a grid shared by the clip, masks taken
    straight from the source by that grid's nearest indices, and colour ops in place.
    """

    def __init__(self, resolution, cfg=None):
        self.size = resolution
        self.cfg = cfg or AugmentConfig()
        self.gray_weights = torch.tensor(GRAY_WEIGHTS)
        self.fill = torch.tensor(AFFINE_FILL).view(3, 1, 1)

    def __call__(self, frames, masks, rng):
        cfg, size = self.cfg, self.size
        height, width = masks.shape[2:] if masks.ndim == 4 and masks.shape[1] else frames[0].shape[:2]
        flip, angle, shear = False, 0.0, 0.0
        if cfg.enabled:
            flip = rng.random() < cfg.hflip_prob
            angle = float(rng.uniform(-cfg.degrees, cfg.degrees))
            shear = float(rng.uniform(-cfg.shear, cfg.shear))
        # Drawn at the source resolution (as the reference applies it), sampled at the output.
        grid = sampling_grid(affine_matrix(angle, shear, flip, width, height), width, height, size)
        flat_masks = self._flat_masks(masks)
        indices = nearest_indices(grid, width, height)
        num_objects = masks.shape[1] if masks.ndim == 4 else 0
        if num_objects and (angle or shear) and not np.take(flat_masks[:num_objects], indices, axis=1).any(axis=1).all():
            # An object would vanish from frame 0: the reference then skips the affine (the
            # flip, an earlier transform, stays).
            grid = sampling_grid(affine_matrix(0.0, 0.0, flip, width, height), width, height, size)
            indices = nearest_indices(grid, width, height)
        mask_out = np.take(flat_masks, indices, axis=1).reshape(len(frames), num_objects, size, size)

        out = torch.empty(len(frames), 3, size, size, dtype=torch.uint8)
        jitter = _jitter_params(rng, cfg.brightness, cfg.contrast, cfg.saturation) if cfg.enabled else None
        gray = cfg.enabled and rng.random() < cfg.grayscale_prob
        for t, frame in enumerate(frames):
            img = self._warp(self._resize_image(frame), grid)
            if cfg.enabled:
                self._jitter_(img, *jitter)
                if gray:
                    img[:] = self._gray(img)
                self._jitter_(img, *_jitter_params(rng, cfg.frame_brightness, cfg.frame_contrast, cfg.frame_saturation))
            out[t] = img.mul_(255).round_()
        return out, torch.from_numpy(mask_out)

    def _flat_masks(self, masks):
        """(T*O, H*W + 1) uint8 with a zero column for pixels outside the source."""
        if masks.ndim != 4 or masks.shape[1] == 0:
            return np.zeros((0, 1), np.uint8)
        t, o, h, w = masks.shape
        flat = np.zeros((t * o, h * w + 1), bool)
        flat[:, :-1] = masks.reshape(t * o, h * w)
        return flat

    def _resize_image(self, frame):
        """uint8 (H, W, 3) -> float (3, S, S) in [0, 1], resized with antialiasing in uint8."""
        img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0)
        img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return img[0].float().div_(255)

    def _warp(self, img, grid):
        # Warping (img - fill) with zero padding and adding fill back equals filling uncovered
        # pixels with `fill` (grid_sample is linear), without a second coverage pass.
        shifted = (img - self.fill).unsqueeze(0)
        return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].add_(self.fill)

    def _gray(self, img):
        w = self.gray_weights
        return torch.mul(img[0], w[0]).add_(img[1], alpha=float(w[1])).add_(img[2], alpha=float(w[2]))

    def _jitter_(self, img, brightness, contrast, saturation, order):
        """torchvision ColorJitter (brightness, contrast, saturation in the drawn order), in place."""
        for op in order:
            if op == 0 and brightness is not None:
                img.mul_(brightness).clamp_(0, 1)
            elif op == 1 and contrast is not None:
                mean = _gray_mean(img, self.gray_weights)
                img.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 1)
            elif op == 2 and saturation is not None:
                gray = self._gray(img)
                img.mul_(saturation).add_(gray.mul_(1 - saturation)).clamp_(0, 1)
