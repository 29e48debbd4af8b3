"""The multi-step loss against values worked out by hand on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from sam2_scale.config import LossConfig
from sam2_scale.objective.loss import MultiStepLoss, mask_losses

BIG = 50.0  # a logit whose sigmoid is 1 (or 0) in fp32


def focal_per_mask(logits, targets, alpha, gamma):
    return mask_losses(logits, targets, alpha, gamma)[0]


def dice_per_mask(logits, targets):
    return mask_losses(logits, targets)[1]


def actual_iou(logits, targets):
    return mask_losses(logits, targets)[2]


def plain_focal_and_dice(logits, targets, alpha, gamma):
    """The textbook formulas, differentiated by autograd: the oracle of the fused backward."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    focal = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        focal = (alpha * targets + (1 - alpha) * (1 - targets)) * focal
    numerator = 2 * (prob * targets).flatten(2).sum(-1)
    denominator = prob.flatten(2).sum(-1) + targets.flatten(2).sum(-1)
    return focal.flatten(2).mean(-1), 1 - (numerator + 1) / (denominator + 1)


def frame(masks_per_step, ious_per_step, obj_per_step):
    return {
        "multistep_pred_multimasks_high_res": masks_per_step,
        "multistep_pred_ious": ious_per_step,
        "multistep_object_score_logits": obj_per_step,
    }


def test_focal_on_one_pixel():
    # logit 0 -> p = 0.5; target 1: ce = ln 2, (1 - p_t)^2 = 1/4, alpha_t = 0.25.
    got = focal_per_mask(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), alpha=0.25, gamma=2)
    assert got.item() == pytest.approx(0.25 * 0.25 * math.log(2))
    # Target 0 weighs by 1 - alpha = 0.75; averaged over the 2 pixels.
    got = focal_per_mask(torch.zeros(1, 1, 1, 2), torch.tensor([[[[True, False]]]]), alpha=0.25, gamma=2)
    assert got.item() == pytest.approx((0.25 + 0.75) * 0.25 * math.log(2) / 2)


def test_dice_by_hand():
    # p = sigmoid(0) = 0.5 on 4 pixels, target has 2 pixels: 2|P∩T| = 2, |P| + |T| = 4.
    got = dice_per_mask(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]))
    assert got.item() == pytest.approx(1 - (2 + 1) / (4 + 1))


def test_actual_iou_by_hand():
    logits = torch.tensor([[[[1.0, 1.0], [1.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert actual_iou(logits, target).item() == pytest.approx(1 / 3)
    # Empty prediction and target: union clamped to 1, IoU 0.
    assert actual_iou(-torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 0.0


def test_multimask_supervises_best_mask_and_all_ious():
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]).bool()  # 1 object, 2x2, one pixel on
    good = torch.tensor([[BIG, -BIG], [-BIG, -BIG]])
    wrong = -good
    empty = -BIG * torch.ones(2, 2)
    masks = torch.stack([wrong, good, empty])[None]  # (1 object, 3 masks, 2, 2)
    ious = torch.tensor([[0.5, 0.9, 0.2]])
    obj = torch.tensor([[2.0]])
    out = MultiStepLoss()([frame([masks], [ious], [obj])], target[None])
    # The perfect candidate (index 1) is chosen: focal and dice ~0.
    assert out["loss_mask"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_dice"].item() == pytest.approx(0.0, abs=1e-6)
    # Actual IoUs: wrong 0 (3 pixels vs 1, no overlap), good 1, empty 0 -> mean L1 of all three.
    assert out["loss_iou"].item() == pytest.approx((0.5 + 0.1 + 0.2) / 3, abs=1e-6)
    assert out["loss_class"].item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    assert out["core_loss"].item() == pytest.approx(out["loss_iou"].item() + out["loss_class"].item(), abs=1e-5)


def test_best_mask_uses_weighted_focal_plus_dice():
    # Candidate A: half right at logit 0 everywhere; candidate B: confidently wrong on 1 of 4 pixels.
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]).bool()
    a = torch.zeros(2, 2)
    b = torch.tensor([[BIG, BIG], [BIG, -BIG]])
    masks = torch.stack([a, b, a])[None]
    loss = MultiStepLoss(LossConfig(weight_mask=20, weight_dice=1))
    out = loss([frame([masks], [torch.zeros(1, 3)], [torch.zeros(1, 1)])], target[None])
    f = focal_per_mask(masks, target[None], 0.25, 2)[0]
    d = dice_per_mask(masks, target[None])[0]
    best = int(torch.argmin(20 * f + d))
    assert out["loss_mask"].item() == pytest.approx(f[best].item(), rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(d[best].item(), rel=1e-6)


def test_absent_object_has_only_object_score_loss():
    target = torch.zeros(1, 1, 2, 2, dtype=torch.bool)  # (T=1, O=1): absent
    masks = torch.randn(1, 1, 2, 2)
    out = MultiStepLoss()([frame([masks], [torch.tensor([[0.7]])], [torch.tensor([[1.5]])])], target)
    assert out["loss_mask"].item() == 0 and out["loss_dice"].item() == 0 and out["loss_iou"].item() == 0
    assert out["loss_class"].item() == pytest.approx(math.log(1 + math.exp(1.5)), rel=1e-6)


def test_sums_over_steps_and_frames_and_normalises_by_objects():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 4, 4) > 0.5  # T=2 frames, O=3 objects
    gt[1, 2] = False  # absent on frame 1
    steps = [torch.randn(3, 1, 4, 4) for _ in range(3)]
    ious = [torch.rand(3, 1) for _ in range(3)]
    objs = [torch.randn(3, 1) for _ in range(3)]
    out = MultiStepLoss()([frame(steps, ious, objs), frame(steps[:1], ious[:1], objs[:1])], gt)
    # By hand: sum over frames and steps of per-object terms, divided by the 3 objects.
    want_mask = 0.0
    for t, n_steps in ((0, 3), (1, 1)):
        target = gt[t].unsqueeze(1)
        present = target.flatten(1).any(1).float()
        for s in range(n_steps):
            want_mask += (focal_per_mask(steps[s], target, 0.25, 2)[:, 0] * present).sum().item() / 3
    assert out["loss_mask"].item() == pytest.approx(want_mask, rel=1e-5)
    c = LossConfig()
    core = c.weight_mask * out["loss_mask"] + out["loss_dice"] + out["loss_iou"] + out["loss_class"]
    assert out["core_loss"].item() == pytest.approx(core.item(), rel=1e-6)


def test_frame_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="1 frame outputs for 2 frames"):
        MultiStepLoss()(
            [frame([torch.zeros(1, 1, 2, 2)], [torch.zeros(1, 1)], [torch.zeros(1, 1)])], torch.zeros(2, 1, 2, 2).bool()
        )


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.5, 1.5)])
def test_fused_mask_losses_equal_the_plain_formulas_with_gradients(alpha, gamma):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 2, 5, 7, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    targets = torch.rand(3, 1, 5, 7, generator=gen) > 0.5
    weights = torch.rand(2, 3, 2, generator=gen, dtype=torch.float64)
    focal, dice, _ = mask_losses(logits, targets, alpha, gamma)
    (weights[0] * focal + weights[1] * dice).sum().backward()
    fused_grad = logits.grad.clone()
    logits.grad = None
    plain_focal, plain_dice = plain_focal_and_dice(logits, targets.double().expand_as(logits), alpha, gamma)
    (weights[0] * plain_focal + weights[1] * plain_dice).sum().backward()
    torch.testing.assert_close(focal, plain_focal.detach())
    torch.testing.assert_close(dice, plain_dice.detach())
    torch.testing.assert_close(fused_grad, logits.grad)


def test_fused_mask_losses_keep_only_the_logits_for_backward():
    """What autograd holds between forward and backward: the logits and the bool targets, not
    the (N, M, H, W) intermediates of the elementwise formulas."""
    logits = torch.randn(2, 3, 64, 64, requires_grad=True)
    targets = torch.rand(2, 1, 64, 64) > 0.5
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        focal, dice, _ = mask_losses(logits, targets)
    big = [t for t in saved if t.numel() >= logits.numel() // 3]
    assert len(big) == 2 and sum(t.element_size() * t.numel() for t in big) <= logits.numel() * 4 + targets.numel()
