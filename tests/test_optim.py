"""Parameter groups (layer decay, vision lr, weight-decay exemptions, freezing) and schedules."""

import math

import pytest

from sam2_scale.config import OptimConfig
from sam2_scale.model import build_sam2
from sam2_scale.train.optim import (
    LRScheduler,
    build_optimizer,
    build_param_groups,
    format_param_rules,
    lr_factor,
    param_rules,
)


@pytest.fixture(scope="module")
def base_plus_rules():
    model = build_sam2("base_plus", device="meta")
    return model, {r.name: r for r in param_rules(model, OptimConfig())}


def test_layer_decay_for_every_trunk_block_of_base_plus(base_plus_rules, reference_hparams):
    model, rules = base_plus_rules
    ref = reference_hparams["layer_decay"]["base_plus_multipliers"]
    num_blocks = len(model.image_encoder.trunk.blocks)
    assert num_blocks == 24
    for i in range(num_blocks):
        names = [n for n in rules if n.startswith(f"image_encoder.trunk.blocks.{i}.")]
        assert names
        for n in names:
            assert rules[n].lr_scale == pytest.approx(0.9 ** (num_blocks - i))
            assert rules[n].lr_scale == pytest.approx(ref[f"blocks.{i}"], abs=1e-6)
            assert rules[n].lr_group == "vision"
    assert rules["image_encoder.trunk.patch_embed.proj.weight"].lr_scale == pytest.approx(0.9**25)
    assert rules["image_encoder.trunk.patch_embed.proj.weight"].lr_scale == pytest.approx(ref["patch_embed"], abs=1e-5)
    assert rules["image_encoder.trunk.pos_embed"].lr_scale == 1.0
    assert rules["image_encoder.trunk.pos_embed_window"].lr_scale == 1.0
    # The neck is in the vision group, undecayed; everything else is the base group.
    assert rules["image_encoder.neck.convs.0.conv.weight"].lr_group == "vision"
    assert rules["image_encoder.neck.convs.0.conv.weight"].lr_scale == 1.0
    assert rules["sam_mask_decoder.iou_token.weight"].lr_group == "base"
    assert rules["memory_attention.layers.0.linear1.weight"].lr_scale == 1.0


def test_weight_decay_exemptions_follow_the_reference(base_plus_rules):
    _, rules = base_plus_rules
    wd = {n: r.weight_decay for n, r in rules.items()}
    # Biases and torch.nn.LayerNorm parameters: no decay.
    assert wd["image_encoder.trunk.blocks.0.norm1.weight"] == 0.0
    assert wd["memory_attention.norm.weight"] == 0.0
    assert wd["sam_mask_decoder.transformer.layers.0.norm1.weight"] == 0.0
    assert wd["obj_ptr_proj.layers.0.bias"] == 0.0
    # LayerNorm2d (not an nn.LayerNorm), layer-scale gammas, embeddings, tokens: decayed.
    for name in (
        "memory_encoder.mask_downsampler.encoder.1.weight",
        "memory_encoder.fuser.layers.0.norm.weight",
        "memory_encoder.fuser.layers.0.gamma",
        "sam_prompt_encoder.mask_downscaling.1.weight",
        "sam_mask_decoder.output_upscaling.1.weight",
        "sam_mask_decoder.mask_tokens.weight",
        "image_encoder.trunk.pos_embed",
        "maskmem_tpos_enc",
        "no_obj_embed_spatial",
        "obj_ptr_proj.layers.0.weight",
    ):
        assert wd[name] == 0.1, name
    # A LayerNorm2d bias is exempt through its name, like every bias.
    assert wd["memory_encoder.fuser.layers.0.norm.bias"] == 0.0


def test_groups_cover_every_parameter_once_with_its_rule():
    model = build_sam2("tiny", device="meta")
    cfg = OptimConfig(base_lr=1e-4, vision_lr=5e-5)
    groups = build_param_groups(model, cfg)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    rules = {r.name: r for r in param_rules(model, cfg)}
    for g in groups:
        for n in g["param_names"]:
            r = rules[n]
            assert g["weight_decay"] == r.weight_decay
            assert g["lr"] == pytest.approx((5e-5 if r.lr_group == "vision" else 1e-4) * r.lr_scale)
    table = format_param_rules(list(rules.values()))
    assert "image_encoder.trunk.blocks.11.attn.qkv.weight" in table and len(table.splitlines()) == len(rules) + 1


def test_trainable_and_frozen_patterns():
    model = build_sam2("tiny", device="meta")
    rules = param_rules(
        model, OptimConfig(trainable=["sam_mask_decoder.*", "sam_prompt_encoder.*"], frozen=["*.iou_prediction_head.*"])
    )
    trainable = {r.name for r in rules if r.trainable}
    assert all(n.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for n in trainable)
    assert not any("iou_prediction_head" in n for n in trainable)
    assert "sam_mask_decoder.mask_tokens.weight" in trainable


def test_cosine_schedule_matches_the_reference_formula():
    cfg = OptimConfig(schedule="cosine", total_steps=100, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    # Reference: end + 0.5 (start - end)(1 + cos(pi * where)), start 5e-6, end 5e-7.
    for step in (1, 37, 50, 99):
        want = 5e-7 + 0.5 * (5e-6 - 5e-7) * (1 + math.cos(math.pi * step / 100))
        assert 5e-6 * lr_factor(step, cfg) == pytest.approx(want)


def test_warmup_rsqrt_and_constant():
    cfg = OptimConfig(schedule="rsqrt", warmup_steps=10, rsqrt_timescale=100)
    assert [lr_factor(s, cfg) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(10 + 300, cfg) == pytest.approx(0.5)
    assert lr_factor(12345, OptimConfig(schedule="constant")) == 1.0
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_factor(0, OptimConfig(schedule="linear"))


def test_scheduler_resumes_from_its_state():
    model = build_sam2("tiny", image_size=128)
    cfg = OptimConfig(total_steps=50, warmup_steps=5)
    sched = LRScheduler(build_optimizer(model, cfg), cfg)
    for _ in range(17):
        sched.step()
    state = sched.state_dict()
    fresh = LRScheduler(build_optimizer(model, cfg), cfg)
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == sched.get_last_lr()
    sched.step()
    fresh.step()
    assert fresh.get_last_lr() == sched.get_last_lr()
