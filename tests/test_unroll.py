"""The training forward (clip unroll) with the model, and a short real training run."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from grads import assert_same_gradients
from tracking_driver import synthetic_clip

from sam2_scale.config import LossConfig, OptimConfig, PromptConfig
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2, set_activation_checkpointing
from sam2_scale.objective import MultiStepLoss, sample_scenario, unroll_clip
from sam2_scale.objective.prompts import ClipScenario, PixelNoise, micro_batch_seeds
from sam2_scale.train.optim import build_optimizer


def clip_batch(num_frames, num_objects, size, seed=0):
    frames, masks = synthetic_clip(num_frames, num_objects, size, seed=seed)
    return Batch.from_clip(frames, masks[:, :, 0])


def unroll(model, batch, seed, cfg=None):
    """The unroll under the scenario and pixel noise of micro-batch `seed` (rank 0)."""
    cfg = cfg or PromptConfig()
    scenario_seed, pixel_seed = micro_batch_seeds(0, seed, 0)
    scenario = sample_scenario(batch.num_frames, cfg, np.random.default_rng(scenario_seed))
    return unroll_clip(model, batch, scenario, PixelNoise(pixel_seed, batch.objects_per_clip, "cpu"), cfg), scenario


def test_one_frame_is_image_training():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128).train()
    batch = clip_batch(1, 2, 128)
    outs, scenario = unroll(model, batch, 0)
    assert scenario.use_pt_input and scenario.frames_to_correct == [0]
    (out,) = outs
    steps = out["multistep_pred_multimasks_high_res"]
    assert len(steps) == 1 + 7, "one initial prediction and 7 correction clicks"
    # A box is 2 points (single mask); a single click gives 3 candidates; corrections give 1.
    first_points = out["multistep_point_inputs"][0]["point_labels"].shape[1]
    assert steps[0].shape == ((2, 3, 128, 128) if first_points == 1 else (2, 1, 128, 128))
    assert all(s.shape == (2, 1, 128, 128) for s in steps[1:])
    # Clicks accumulate: each correction adds one point.
    counts = [p["point_labels"].shape[1] for p in out["multistep_point_inputs"]]
    assert counts == list(range(first_points, first_points + 8))
    assert "obj_ptr" not in out


def test_video_unroll_structure_and_memory_use():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128).train()
    batch = clip_batch(4, 2, 128)
    seen_points = False
    for seed in range(4):
        outs, scenario = unroll(model, batch, seed)
        assert len(outs) == 4
        for t, out in enumerate(outs):
            n_steps = len(out["multistep_pred_ious"])
            assert n_steps == (8 if t in scenario.frames_to_correct else 1)
            assert out["pred_masks_high_res"].shape == (2, 1, 128, 128)
            assert out["maskmem_features"].shape == (2, 64, 8, 8)
        seen_points |= scenario.use_pt_input
    assert seen_points


def test_frozen_modules_get_no_gradient_and_no_optimizer_state():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128).train()
    opt = build_optimizer(model, OptimConfig(frozen=["image_encoder.*"], base_lr=1e-4))
    batch = clip_batch(2, 1, 128)
    outs, _ = unroll(model, batch, 0)
    MultiStepLoss()(outs, batch.masks)["core_loss"].backward()
    opt.step()
    for name, p in model.named_parameters():
        if name.startswith("image_encoder."):
            assert p.grad is None and not p.requires_grad, name
            assert p not in opt.state, name
    assert any(p.grad is not None for n, p in model.named_parameters() if n.startswith("sam_mask_decoder."))


@pytest.mark.slow
def test_loss_decreases_over_30_steps_on_a_fixed_clip():
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128, drop_path_rate=0.0).train()
    cfg = OptimConfig(base_lr=3e-4, vision_lr=3e-4, layer_decay=1.0, schedule="constant", weight_decay=0.0)
    opt = build_optimizer(model, cfg)
    # 3 frames: at most 2 are prompted, so at least one is predicted from memory.
    batch = clip_batch(3, 2, 128, seed=5)
    loss_fn = MultiStepLoss()
    losses = []
    for _ in range(30):
        # The same prompts every step, so that the objective itself is fixed.
        outs, _ = unroll(model, batch, 1)
        loss = loss_fn(outs, batch.masks)["core_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append(loss.item())
    print("losses", [round(v, 3) for v in losses])
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def _rank_main(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # ranks differ in everything but the scenario seeds
    model = build_sam2("tiny", image_size=128).train()
    batch = clip_batch(3, 1 + rank, 128, seed=rank)  # different data and object counts per rank
    record = []
    for k in range(3):
        scenario_seed, pixel_seed = micro_batch_seeds(0, k, rank)
        scenario = sample_scenario(3, PromptConfig(), np.random.default_rng(scenario_seed))
        outs = unroll_clip(model, batch, scenario, PixelNoise(pixel_seed, batch.objects_per_clip, "cpu"))
        losses = MultiStepLoss()(outs, batch.masks)
        record.append((scenario.init_cond_frames, scenario.frames_to_correct, scenario.prompt_kind, scenario.use_pt_input))
    gathered = [None] * world
    dist.all_gather_object(gathered, (record, losses["core_loss"].item()))
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "gathered.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_prompt_scenarios_are_identical_across_ranks(tmp_path, unused_port):
    mp.spawn(_rank_main, args=(2, unused_port, str(tmp_path)), nprocs=2, join=True)
    (rec0, loss0), (rec1, loss1) = torch.load(tmp_path / "gathered.pt", weights_only=False)
    assert rec0 == rec1
    assert loss0 != loss1


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes
def test_loss_normaliser_is_the_mean_object_count_across_ranks(tmp_path, unused_port):
    mp.spawn(_normaliser_main, args=(2, unused_port, str(tmp_path)), nprocs=2, join=True)
    assert [float(n) for n in torch.load(tmp_path / "n.pt")] == [1.5, 1.5]


def _normaliser_main(rank, world, port, out_dir):
    from sam2_scale.objective.loss import global_num_objects

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = global_num_objects(1 + rank, torch.device("cpu"))  # 1 and 2 objects -> 1.5 on both
    gathered = [None] * world
    dist.all_gather_object(gathered, n)
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "n.pt"))
    dist.destroy_process_group()


def test_prompt_config_values_are_the_reference_ones(reference_hparams):
    ref = reference_hparams["prompt_simulation_train"]
    cfg = PromptConfig()
    assert cfg.prob_to_use_pt_input == ref["prob_to_use_pt_input_for_train"]
    assert cfg.prob_to_use_box_input == ref["prob_to_use_box_input_for_train"]
    assert cfg.num_init_cond_frames == ref["num_init_cond_frames_for_train"]
    assert cfg.num_frames_to_correct == ref["num_frames_to_correct_for_train"]
    assert cfg.num_correction_pt_per_frame == ref["num_correction_pt_per_frame"]
    assert cfg.prob_to_sample_from_gt == ref["prob_to_sample_from_gt_for_train"]
    assert cfg.add_all_frames_to_correct_as_cond == ref["add_all_frames_to_correct_as_cond"]
    assert (cfg.box_noise, cfg.box_noise_bound) == (ref["box_noise_fraction_of_side"], ref["box_noise_bound_px"])
    loss = reference_hparams["loss"]
    lc = LossConfig()
    assert (lc.weight_mask, lc.weight_dice, lc.weight_iou, lc.weight_class) == tuple(
        loss["weight_dict"][k] for k in ("loss_mask", "loss_dice", "loss_iou", "loss_class")
    )
    assert (lc.focal_alpha, lc.focal_gamma) == (loss["focal_alpha"], loss["focal_gamma"])


@pytest.mark.slow
@pytest.mark.parametrize("regions", [["heads", "memory_encoder"], ["hiera", "memory_attention"]])
def test_checkpointed_regions_give_identical_loss_and_grads(regions):
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128).train()
    batch = clip_batch(3, 2, 128)
    results = []
    for setting in ([], regions):
        set_activation_checkpointing(model, setting)
        torch.manual_seed(5)  # the same dropout and drop-path draws in both runs
        outs, scenario = unroll(model, batch, 2)
        loss = MultiStepLoss()(outs, batch.masks)["core_loss"]
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    assert scenario.use_pt_input, "corrections run the heads again: the case checkpointing must get right"
    assert results[0][0] == results[1][0]
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, msg=name)


@pytest.mark.slow
def test_batched_clips_equal_clips_one_by_one():
    """Two clips in one unroll give each clip's outputs and, summed, its gradients, as when the
    clips run alone under the same prompts (per-clip pixel noise)."""
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=128, drop_path_rate=0.0).train()
    for module in model.modules():  # dropout draws would differ between the two layouts
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for module in model.memory_attention.modules():
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0
    clips = [clip_batch(4, 2, 128, seed=1), clip_batch(4, 1, 128, seed=2)]
    idx = torch.stack([torch.arange(4)[:, None].expand(4, 3), torch.tensor([0, 0, 1]).expand(4, 3)], dim=-1)
    batched = Batch(torch.cat([c.frames for c in clips], dim=1), torch.cat([c.masks for c in clips], dim=1), idx, [2, 1])
    scenario = ClipScenario(4, True, [0, 2], frames_to_correct=[0, 2, 3], prompt_kind={0: "click", 2: "box"})
    scenario.click_from_gt = {0: [False] * 6 + [True], 2: [True] + [False] * 6, 3: [False] * 7}
    cfg = PromptConfig(num_frames_to_correct=3)
    loss_fn = MultiStepLoss()

    def run(batch, counts_before):
        # Clip b draws from generator b of seed 9; alone, clip 1 is preceded by an empty clip 0.
        noise = PixelNoise(9, counts_before + batch.objects_per_clip, "cpu")
        outs = unroll_clip(model, batch, scenario, noise, cfg)
        model.zero_grad(set_to_none=True)
        losses = loss_fn(outs, batch.masks)
        (losses["core_loss"] * batch.num_objects).backward()  # undo the per-object normalisation
        return outs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    outs_b, grads_b = run(batched, [])
    outs_0, grads_0 = run(clips[0], [])
    outs_1, grads_1 = run(clips[1], [0])
    keys = ("pred_masks_high_res", "maskmem_features")
    for t in range(4):
        for key in keys:
            torch.testing.assert_close(outs_b[t][key], torch.cat([outs_0[t][key], outs_1[t][key]]), msg=f"frame {t} {key}")
        for step, (a, b0, b1) in enumerate(zip(*(o[t]["multistep_pred_multimasks_high_res"] for o in (outs_b, outs_0, outs_1)))):
            torch.testing.assert_close(a, torch.cat([b0, b1]), msg=f"frame {t} step {step}")
    assert_same_gradients(grads_b, {name: grads_0[name] + grads_1[name] for name in grads_0})
