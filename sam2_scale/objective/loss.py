"""The SAM 2.1 multi-step loss: focal + dice on the best of the multimask outputs, L1 on the
predicted IoU of every mask, BCE on the object score; summed over correction steps and frames."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config.schema import LossConfig
from ..model.compile import mark_objects_dynamic


class _MaskLosses(torch.autograd.Function):
    """Focal and dice loss per mask, and the actual IoU, in one pass over the logits.

    Autograd through the elementwise formulas would keep several (N, M, H, W) fp32 tensors per
    prediction step (sigmoid, cross-entropy, modulating factor, ...) until backward; this keeps
    only the logits and the bool targets, and recomputes the rest in a backward written out by
    hand. Sums over pixels run in fp32 whatever the logits' dtype.
    """

    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma):
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        t = targets.expand_as(x)
        log_p, log_1mp = -F.softplus(-x), -F.softplus(x)  # log sigmoid(x), log (1 - sigmoid(x))
        p = log_p.exp()
        one_minus_p_t = torch.where(t, 1 - p, p)
        focal = -torch.where(t, log_p, log_1mp) * one_minus_p_t.pow(gamma)
        if alpha >= 0:
            focal = focal * torch.where(t, alpha, 1 - alpha)
        focal = focal.flatten(2).mean(-1)
        intersection = torch.where(t, p, 0.0).flatten(2).sum(-1)
        total = p.flatten(2).sum(-1) + t.flatten(2).sum(-1)
        dice = 1 - (2 * intersection + 1) / (total + 1)
        predicted = (x > 0).flatten(2)
        inter = (predicted & t.flatten(2)).sum(-1).to(x.dtype)
        union = (predicted | t.flatten(2)).sum(-1).to(x.dtype)
        iou = inter / union.clamp(min=1.0)
        ctx.save_for_backward(logits, targets, intersection, total)
        ctx.alpha, ctx.gamma = alpha, gamma
        ctx.mark_non_differentiable(iou)
        return focal, dice, iou

    @staticmethod
    def backward(ctx, grad_focal, grad_dice, _):
        logits, targets, intersection, total = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        t = targets.expand_as(x)
        log_p, log_1mp = -F.softplus(-x), -F.softplus(x)
        p = log_p.exp()
        q = 1 - p
        # d/dx of -a (1-p)^g log p (target 1) and of -(1-a) p^g log(1-p) (target 0).
        d_pos = q.pow(gamma) * (gamma * p * log_p - q)
        d_neg = p.pow(gamma) * (p - gamma * q * log_1mp)
        if alpha >= 0:
            d_pos, d_neg = alpha * d_pos, (1 - alpha) * d_neg
        num_pixels = x.shape[-1] * x.shape[-2]
        grad = torch.where(t, d_pos, d_neg) * (grad_focal / num_pixels)[..., None, None]
        # dice = 1 - (2 I + 1) / (S + 1): d/dp_i = ((2 I + 1) - 2 t_i (S + 1)) / (S + 1)^2.
        denominator = (total + 1)[..., None, None]
        d_dice_dp = ((2 * intersection + 1)[..., None, None] - 2 * t * denominator) / denominator.square()
        grad = grad + d_dice_dp * (p * q) * grad_dice[..., None, None]
        return grad.to(logits.dtype), None, None, None


def mask_losses(logits, targets, alpha=0.25, gamma=2.0):
    """(focal, dice, IoU of logits > 0), each (N, M), of mask logits (N, M, H, W) against bool
    targets (N, 1 or M, H, W). Focal is averaged over pixels; IoU's union is clamped to >= 1."""
    return _MaskLosses.apply(logits, targets.bool(), alpha, gamma)


def global_num_objects(num_local, device):
    """Objects per rank averaged over ranks (>= 1): the loss normaliser, the same on all ranks.

    Stays on the device (an all-reduce, no read-back) under torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        n = torch.full((), float(num_local), device=device)
        dist.all_reduce(n)
        return (n / dist.get_world_size()).clamp(min=1.0)
    return max(float(num_local), 1.0)


class MultiStepLoss(torch.nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def compile_step_terms(self, backend="inductor"):
        """Compile the per-step terms (one graph per mask count, 1 or 3, for any object count)."""
        self._step_terms = torch.compile(self._step_terms, backend=backend)

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
            target = targets.unsqueeze(1)  # (O, 1, H, W) bool
            present = target.flatten(1).any(dim=-1, keepdim=True).float()  # (O, 1)
            steps = zip(
                outputs["multistep_pred_multimasks_high_res"],
                outputs["multistep_pred_ious"],
                outputs["multistep_object_score_logits"],
            )
            mark_objects_dynamic(target, present)  # objects vary between calls
            for masks, ious, obj_logits in steps:
                mark_objects_dynamic(masks, ious, obj_logits)
                for key, value in self._step_terms(masks, target, present, ious, obj_logits).items():
                    totals[key] = totals[key] + value
        totals = {key: value / num_objects for key, value in totals.items()}
        c = self.cfg
        totals["core_loss"] = (
            c.weight_mask * totals["loss_mask"]
            + c.weight_dice * totals["loss_dice"]
            + c.weight_iou * totals["loss_iou"]
            + c.weight_class * totals["loss_class"]
        )
        return totals

    def _step_terms(self, masks, target, present, ious, obj_logits):
        """One prediction step's terms, summed over objects (not yet divided by their number)."""
        c = self.cfg
        # Under bf16 autocast the heads emit bf16 scores; the loss works in fp32.
        ious, obj_logits = ious.float(), obj_logits.float()
        focal, dice, actual = mask_losses(masks, target, c.focal_alpha, c.focal_gamma)  # (O, M) each
        iou_err = actual - ious
        iou = iou_err.abs() if c.iou_use_l1_loss else iou_err.square()
        # Plain BCE on the object score (focal with gamma 0, no alpha), for absent objects too.
        obj = F.binary_cross_entropy_with_logits(obj_logits, present, reduction="none").mean(1).sum()

        if masks.shape[1] > 1:
            # Supervise only the candidate that fits best (lowest weighted focal + dice).
            best = torch.argmin(focal * c.weight_mask + dice * c.weight_dice, dim=-1, keepdim=True)
            focal, dice = focal.gather(1, best), dice.gather(1, best)
            iou = iou.mean(dim=-1, keepdim=True) if c.supervise_all_iou else iou.gather(1, best)
        # No mask or IoU supervision where the object is absent.
        return {
            "loss_mask": (focal * present).sum(),
            "loss_dice": (dice * present).sum(),
            "loss_iou": (iou * present).sum(),
            "loss_class": obj,
        }
