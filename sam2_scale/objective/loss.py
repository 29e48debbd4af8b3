"""The SAM 2.1 multi-step loss: focal + dice on the best of the multimask outputs, L1 on the
predicted IoU of every mask, BCE on the object score; summed over correction steps and frames."""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass
class LossConfig:
    weight_mask: float = 20.0  # focal
    weight_dice: float = 1.0
    weight_iou: float = 1.0
    weight_class: float = 1.0  # object score
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = True  # IoU loss on all 3 masks, not only the best
    iou_use_l1_loss: bool = True


def focal_per_mask(logits, targets, alpha, gamma):
    """Sigmoid focal loss averaged over pixels: (N, M, H, W) -> (N, M)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_per_mask(logits, targets):
    """1 - (2|P∩T| + 1) / (|P| + |T| + 1) on sigmoid probabilities: (N, M, H, W) -> (N, M).

    2|P∩T| is written as |P| + |T| - ||P - T||_1, which equals it for binary targets.
    """
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    denominator = prob.sum(-1) + targets.sum(-1)
    numerator = denominator - (prob - targets).abs().sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def actual_iou(logits, targets):
    """IoU of (logits > 0) with the target per mask, union clamped to >= 1: (N, M)."""
    pred = logits.flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def global_num_objects(num_local, device):
    """Objects per rank averaged over ranks (>= 1): the loss normaliser, the same on all ranks."""
    n = torch.tensor(float(num_local), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return max(n.item(), 1.0)


class MultiStepLoss(torch.nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(self, frame_outputs, gt_masks):
        """frame_outputs: `unroll_clip`'s list over T frames; gt_masks: bool (T, O, H, W).

        Returns {"loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"}; core_loss is the
        weighted sum to back-propagate, the others are the unweighted terms for logging.
        """
        if len(frame_outputs) != gt_masks.shape[0]:
            raise ValueError(f"{len(frame_outputs)} frame outputs for {gt_masks.shape[0]} frames of targets")
        num_objects = global_num_objects(gt_masks.shape[1], gt_masks.device)
        totals = {"loss_mask": 0.0, "loss_dice": 0.0, "loss_iou": 0.0, "loss_class": 0.0}
        for outputs, targets in zip(frame_outputs, gt_masks):
            target = targets.unsqueeze(1).float()  # (O, 1, H, W)
            steps = zip(
                outputs["multistep_pred_multimasks_high_res"],
                outputs["multistep_pred_ious"],
                outputs["multistep_object_score_logits"],
            )
            for masks, ious, obj_logits in steps:
                for key, value in self._step_terms(masks, target, ious, obj_logits, num_objects).items():
                    totals[key] = totals[key] + value
        c = self.cfg
        totals["core_loss"] = (
            c.weight_mask * totals["loss_mask"]
            + c.weight_dice * totals["loss_dice"]
            + c.weight_iou * totals["loss_iou"]
            + c.weight_class * totals["loss_class"]
        )
        return totals

    def _step_terms(self, masks, target, ious, obj_logits, num_objects):
        c = self.cfg
        # Under bf16 autocast the heads emit bf16 logits; the loss is summed over many pixels in fp32.
        masks, ious, obj_logits = masks.float(), ious.float(), obj_logits.float()
        target = target.expand_as(masks)
        focal = focal_per_mask(masks, target, c.focal_alpha, c.focal_gamma) / num_objects  # (O, M)
        dice = dice_per_mask(masks, target) / num_objects
        iou_err = actual_iou(masks, target) - ious
        iou = (iou_err.abs() if c.iou_use_l1_loss else iou_err.square()) / num_objects
        present = target[:, 0].flatten(1).any(dim=-1, keepdim=True).float()  # (O, 1)
        # Plain BCE on the object score (focal with gamma 0, no alpha), for absent objects too.
        obj = F.binary_cross_entropy_with_logits(obj_logits, present, reduction="none").mean(1).sum() / num_objects

        if masks.shape[1] > 1:
            # Supervise only the candidate that fits best (lowest weighted focal + dice).
            best = torch.argmin(focal * c.weight_mask + dice * c.weight_dice, dim=-1)
            rows = torch.arange(masks.shape[0], device=masks.device)
            focal, dice = focal[rows, best][:, None], dice[rows, best][:, None]
            iou = iou.mean(dim=-1, keepdim=True) if c.supervise_all_iou else iou[rows, best][:, None]
        # No mask or IoU supervision where the object is absent.
        return {
            "loss_mask": (focal * present).sum(),
            "loss_dice": (dice * present).sum(),
            "loss_iou": (iou * present).sum(),
            "loss_class": obj,
        }
