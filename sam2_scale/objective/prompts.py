"""Prompt simulation for SAM 2.1 training: which frames get prompts, of which kind, and where
the clicks land.

Two sources of randomness, so that nothing random is ever read back from the device:
- The *scenario* (mask vs points, which frames, which correction clicks sample from the GT) is
  drawn on the host from a NumPy generator seeded identically on every rank (no tensor at all,
  so nothing of it can ever wait for a device). Ranks therefore run
  the same number of decoder passes, which keeps the collectives of sharded training in
  lockstep, and the host never waits for the device to decide what to launch next.
- *Pixel* draws (click positions, box jitter) come from `PixelNoise`: one device generator per
  clip, never read back. A clip's prompts do not depend on which clips are batched with it.
"""

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ClipScenario:
    num_frames: int
    use_pt_input: bool
    init_cond_frames: list
    frames_to_correct: list = field(default_factory=list)
    prompt_kind: dict = field(default_factory=dict)  # initial frame -> "mask" | "box" | "click"
    # corrected frame -> one flag per correction click: click as if nothing had been predicted
    click_from_gt: dict = field(default_factory=dict)

    @property
    def processing_order(self):
        """Initial conditioning frames first, then the rest in time order."""
        return self.init_cond_frames + [t for t in range(self.num_frames) if t not in self.init_cond_frames]


def _uniform(gen):
    return float(gen.random())


def _randint(low, high, gen):
    """Uniform integer in [low, high]."""
    return int(gen.integers(low, high + 1))


def _choice(options, k, gen):
    """k distinct elements of `options`, in random order."""
    return [options[i] for i in gen.permutation(len(options))[:k]]


def micro_batch_seeds(seed, micro_batch, rank):
    """(scenario seed, pixel seed) of one micro-batch of a run: the scenario seed is the same on
    every rank, the pixel seed differs per rank. Derived, not carried: resuming at a step
    reproduces them, whatever the number of ranks before."""
    scenario = np.random.SeedSequence([seed, micro_batch]).generate_state(1, np.uint64)[0]
    pixels = np.random.SeedSequence([seed, micro_batch, rank, 1]).generate_state(1, np.uint64)[0]
    return int(scenario), int(pixels >> np.uint64(1))  # torch seeds are below 2**63


class PixelNoise:
    """Uniform noise for clicks and box jitter, drawn on the device from one generator per clip.

    seed: a host integer (see `micro_batch_seeds`); objects_per_clip: the batch's object counts,
    clip-major as in `Batch`. On the meta device (FLOP counting) no generator exists: draws are
    shape-only there.
    """

    def __init__(self, seed, objects_per_clip, device):
        device = torch.device(device)
        self.objects_per_clip = list(objects_per_clip)
        clip_seeds = np.random.SeedSequence(seed).generate_state(len(self.objects_per_clip), np.uint64) >> np.uint64(1)
        if device.type == "meta":
            self.generators = [None] * len(self.objects_per_clip)
        else:
            self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in clip_seeds]
        self.device = device

    def uniform(self, *shape):
        """U[0, 1) of shape (O, *shape): each clip's rows from that clip's generator."""
        parts = [
            torch.rand((n, *shape), generator=g, device=self.device) for n, g in zip(self.objects_per_clip, self.generators) if n
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def sample_scenario(num_frames, cfg, gen):
    """Draw the prompting scenario of one clip (the same for every object in the batch) from
    `gen`, a `numpy.random.Generator`.

    Single frames (images) always use point input on that frame, corrected once.
    """
    prob_pt, num_init, num_correct = cfg.prob_to_use_pt_input, cfg.num_init_cond_frames, cfg.num_frames_to_correct
    if num_frames == 1:
        prob_pt, num_init, num_correct = 1.0, 1, 1
    use_pt_input = _uniform(gen) < prob_pt
    num_init = min(num_init, num_frames)
    if cfg.rand_init_cond_frames and num_init > 1:
        num_init = _randint(1, num_init, gen)
    num_correct = min(max(num_correct, num_init), num_frames)
    if use_pt_input and cfg.rand_frames_to_correct and num_correct > num_init:
        num_correct = _randint(num_init, num_correct, gen)

    # Frame 0 always conditions; the others are random later frames.
    init_cond_frames = [0] + _choice(list(range(1, num_frames)), num_init - 1, gen)
    scenario = ClipScenario(num_frames, use_pt_input, init_cond_frames)
    for t in init_cond_frames:
        if not use_pt_input:
            scenario.prompt_kind[t] = "mask"
        else:
            scenario.prompt_kind[t] = "box" if _uniform(gen) < cfg.prob_to_use_box_input else "click"
    if use_pt_input:
        others = [t for t in range(num_frames) if t not in init_cond_frames]
        scenario.frames_to_correct = init_cond_frames + _choice(others, num_correct - num_init, gen)
        p = cfg.prob_to_sample_from_gt
        for t in scenario.frames_to_correct:
            n = cfg.num_correction_pt_per_frame
            scenario.click_from_gt[t] = [_uniform(gen) < p for _ in range(n)] if p > 0 else [False] * n
    return scenario


def mask_to_box(masks):
    """Tight xyxy boxes (B, 4) of bool masks (B, 1, H, W), in pixel indices.

    An empty mask gives (W, H, -1, -1), which the caller clamps into the image.
    """
    b, _, h, w = masks.shape
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    rows = masks[:, 0].any(dim=2)  # (B, H): the row has mask pixels
    cols = masks[:, 0].any(dim=1)  # (B, W)
    min_x = torch.where(cols, xs, w).amin(dim=-1)
    max_x = torch.where(cols, xs, -1).amax(dim=-1)
    min_y = torch.where(rows, ys, h).amin(dim=-1)
    max_y = torch.where(rows, ys, -1).amax(dim=-1)
    return torch.stack([min_x, min_y, max_x, max_y], dim=-1)


def sample_box_prompt(gt_masks, noise, box_noise=0.1, noise_bound=20.0):
    """Box corners of the GT masks, each coordinate jittered uniformly by up to
    min(box_noise * side, noise_bound) pixels and clamped into the image.

    noise: a `PixelNoise` over the same objects. Returns points (B, 2, 2) as (x, y) and labels
    (B, 2) = (2, 3), the corner labels.
    """
    b, _, h, w = gt_masks.shape
    box = mask_to_box(gt_masks).float()
    if box_noise > 0:
        max_dx = ((box[:, 2] - box[:, 0]) * box_noise).clamp(max=noise_bound)
        max_dy = ((box[:, 3] - box[:, 1]) * box_noise).clamp(max=noise_bound)
        jitter = 2 * noise.uniform(4).to(box.device) - 1
        box = box + jitter * torch.stack([max_dx, max_dy, max_dx, max_dy], dim=-1)
        if w == h:
            box = box.clamp(0, w - 1)
        else:
            box = torch.stack([box[:, 0::2].clamp(0, w - 1), box[:, 1::2].clamp(0, h - 1)], dim=-1).flatten(1)
    labels = torch.arange(2, 4, dtype=torch.int32, device=box.device).expand(b, 2)
    return box.reshape(b, 2, 2), labels.contiguous()


def sample_click_from_error(gt_masks, pred_masks, noise):
    """One click per object, uniform over the error region of `pred_masks` vs `gt_masks`.

    A false-negative pixel gives a positive click (label 1), a false-positive pixel a negative
    click (label 0). `pred_masks=None` means "nothing predicted": the click is then uniform
    inside the GT. A perfect prediction gets a negative click on the background.
    gt_masks, pred_masks: bool (B, 1, H, W); noise: a `PixelNoise` over the same objects.
    Returns points (B, 1, 2) as (x, y), labels (B, 1).
    """
    if pred_masks is None:
        pred_masks = torch.zeros_like(gt_masks)
    b, _, h, w = gt_masks.shape
    false_neg = gt_masks & ~pred_masks
    false_pos = ~gt_masks & pred_masks
    perfect = ~(false_neg | false_pos).flatten(1).any(dim=1)
    # Where the prediction is perfect, click on the background instead.
    negative_region = false_pos | (perfect[:, None, None, None] & ~gt_masks)
    region = (false_neg | negative_region).flatten(1)
    # Uniform among region pixels: the argmax of i.i.d. uniform scores restricted to the region.
    scores = noise.uniform(h * w).to(gt_masks.device)
    index = torch.where(region, scores, -1.0).argmax(dim=1)
    labels = false_neg.flatten(1).gather(1, index[:, None]).to(torch.int32)
    points = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], dim=-1).float()
    return points[:, None, :], labels


def concat_points(point_inputs, new_points, new_labels):
    if point_inputs is None:
        return {"point_coords": new_points, "point_labels": new_labels}
    return {
        "point_coords": torch.cat([point_inputs["point_coords"], new_points], dim=1),
        "point_labels": torch.cat([point_inputs["point_labels"], new_labels], dim=1),
    }
