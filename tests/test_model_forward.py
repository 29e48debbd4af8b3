"""Forward shapes, tracking, activation checkpointing and bf16 autocast (tiny, small images)."""

import pytest
import torch
from tracking_driver import run_clip, synthetic_clip

from sam2_scale.model import build_sam2, set_activation_checkpointing
from sam2_scale.model.attention import attention_kernels


@pytest.fixture(scope="module")
def tiny256():
    torch.manual_seed(0)
    return build_sam2("tiny", image_size=256)


def test_forward_image_shapes(tiny256):
    out = tiny256.eval().forward_image(torch.randn(2, 3, 256, 256))
    assert out["vision_features"].shape == (2, 256, 16, 16)
    assert [tuple(x.shape) for x in out["backbone_fpn"]] == [(2, 32, 64, 64), (2, 64, 32, 32), (2, 256, 16, 16)]
    assert [tuple(x.shape) for x in out["vision_pos_enc"]] == [(2, 256, 64, 64), (2, 256, 32, 32), (2, 256, 16, 16)]
    assert out["vision_features"] is out["backbone_fpn"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [512, 384])
def test_other_image_sizes(image_size):
    model = build_sam2("tiny", image_size=image_size).eval()
    frames, masks = synthetic_clip(2, 1, image_size)
    with torch.no_grad():
        outs = run_clip(model, frames, masks)
    assert outs[-1]["pred_masks_high_res"].shape == (1, 1, image_size, image_size)
    assert outs[-1]["maskmem_features"].shape == (1, 64, image_size // 16, image_size // 16)


def test_three_frame_tracking_with_mask_then_points(tiny256):
    model = tiny256.eval()
    frames, gt = synthetic_clip(3, 2, 256)
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    with torch.no_grad():
        for t in range(3):
            _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(frames[t : t + 1]))
            feats = [x.expand(-1, 2, -1) for x in feats]
            pos = [x.expand(-1, 2, -1) for x in pos]
            points = None
            if t == 1:
                points = {
                    "point_coords": torch.tensor([[[100.0, 80.0]], [[30.0, 200.0]]]),
                    "point_labels": torch.ones(2, 1, dtype=torch.int32),
                }
            out = model.track_step(t, t == 0, feats, pos, sizes, points, gt[0] if t == 0 else None, output_dict, num_frames=3)
            output_dict["cond_frame_outputs" if t < 2 else "non_cond_frame_outputs"][t] = out
            assert out["pred_masks"].shape == (2, 1, 64, 64)
            assert out["pred_masks_high_res"].shape == (2, 1, 256, 256)
            assert out["obj_ptr"].shape == (2, 256)
            assert out["object_score_logits"].shape == (2, 1)
            assert out["maskmem_features"].shape == (2, 64, 16, 16)
            assert out["maskmem_pos_enc"][0].shape == (2, 64, 16, 16)
    # The mask prompt is the frame-0 output itself (+-10 logits).
    first = output_dict["cond_frame_outputs"][0]
    assert torch.equal(first["pred_masks_high_res"] > 0, gt[0])
    assert first["pred_masks_high_res"].abs().max() == 10


def test_training_mode_has_no_object_score_in_output(tiny256):
    model = tiny256.train()
    frames, gt = synthetic_clip(2, 1, 256)
    outs = run_clip(model, frames, gt)
    assert "object_score_logits" not in outs[-1]
    model.eval()


def _loss_and_grads(model, frames, gt, kernels=()):
    """The forward under the attention `kernels`, the backward outside them (as the trainer runs)."""
    torch.manual_seed(123)  # same dropout / drop-path draws in both runs
    with attention_kernels(kernels):
        outs = run_clip(model, frames, gt)
    loss = sum(o["pred_masks_high_res"].sigmoid().mean() + o["obj_ptr"].pow(2).mean() for o in outs)
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [o["pred_masks_high_res"].detach() for o in outs], grads


@pytest.mark.slow
def test_activation_checkpointing_gives_identical_outputs_and_grads():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=256, drop_path_rate=0.1).train()
    frames, gt = synthetic_clip(4, 2, 256)
    outs_plain, grads_plain = _loss_and_grads(model, frames, gt)
    set_activation_checkpointing(model, True)
    outs_ckpt, grads_ckpt = _loss_and_grads(model, frames, gt)
    for a, b in zip(outs_plain, outs_ckpt):
        assert torch.equal(a, b)
    assert grads_plain.keys() == grads_ckpt.keys()
    # The trunk and memory attention must both have been trained through.
    assert any(k.startswith("image_encoder.trunk.blocks.") for k in grads_plain)
    assert any(k.startswith("memory_attention.layers.") for k in grads_plain)
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_recompute_uses_the_attention_kernel_of_the_forward():
    """The forward runs under `model.attention_backends` (here math, not the CPU's fused kernel),
    the backward outside it: the checkpointed regions must recompute with the forward's kernel,
    or the tensors they save differ and the backward stops (CheckpointError)."""
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=64).train()
    frames, gt = synthetic_clip(3, 1, 64)
    _, plain = _loss_and_grads(model, frames, gt, kernels=["math"])
    set_activation_checkpointing(model, ("hiera", "memory_attention", "heads", "memory_encoder"))
    _, recomputed = _loss_and_grads(model, frames, gt, kernels=["math"])
    assert plain.keys() == recomputed.keys() and any(k.startswith("memory_attention.layers.") for k in plain)
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def _saved_activation_bytes(model, frames, gt):
    """Bytes that autograd keeps for backward, outside checkpointed regions."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = run_clip(model, frames, gt)
    return total[0], outs


@pytest.mark.slow
def test_checkpointing_recomputes_blocks_and_saves_activation_memory():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=256).train()
    frames, gt = synthetic_clip(3, 1, 256)
    plain_bytes, _ = _saved_activation_bytes(model, frames, gt)

    set_activation_checkpointing(model, True)
    calls = {"trunk": 0, "memory": 0}
    for key, module in (("trunk", model.image_encoder.trunk.blocks[0].mlp), ("memory", model.memory_attention.layers[0].linear1)):
        original = module.forward
        module.forward = lambda x, _f=original, _k=key: (calls.__setitem__(_k, calls[_k] + 1), _f(x))[1]
    ckpt_bytes, outs = _saved_activation_bytes(model, frames, gt)
    forward_calls = dict(calls)
    sum(o["pred_masks_high_res"].mean() for o in outs).backward()
    # Every checkpointed block ran once more during backward.
    assert calls["trunk"] == 2 * forward_calls["trunk"] > 0
    assert calls["memory"] == 2 * forward_calls["memory"] > 0
    assert ckpt_bytes < 0.5 * plain_bytes


@pytest.mark.slow
def test_bf16_autocast_forward_and_backward():
    # 128 px keeps this quick: bf16 convolutions are slow on CPUs without native bf16.
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128).train()
    frames, gt = synthetic_clip(3, 2, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = run_clip(model, frames, gt)
        loss = sum(o["pred_masks_high_res"].float().sigmoid().mean() for o in outs)
    loss.backward()
    assert torch.isfinite(loss)
    assert outs[-1]["maskmem_features"].dtype == torch.bfloat16
    assert outs[-1]["pred_masks_high_res"].dtype == torch.float32  # upsampled in fp32
    grads = [p.grad for p in model.image_encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.memory_attention.layers[0].cross_attn_image.k_proj.weight.grad is not None

    # bf16 tracks the fp32 model closely on the same inputs.
    model.eval()
    with torch.no_grad():
        ref = run_clip(model, frames, gt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = run_clip(model, frames, gt)
    for a, b in zip(ref, low):
        agree = ((a["pred_masks_high_res"] > 0) == (b["pred_masks_high_res"] > 0)).float().mean()
        assert agree > 0.95
