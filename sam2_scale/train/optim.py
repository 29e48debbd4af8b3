"""AdamW parameter groups (layer-wise lr decay, vision lr, weight-decay exemptions, freezing)
and per-step learning-rate schedules, with SAM 2.1's rules.

The rules, as the reference recipe applies them:
- lr: parameters named `image_encoder.*` (trunk and FPN neck) follow `vision_lr`, all others
  `base_lr`. Inside `image_encoder.trunk`, block i is scaled by decay^(L - i) and the patch
  embedding by decay^(L + 1) (L = number of blocks); `*pos_embed*` is exempt (scale 1).
- weight decay: 0 for names containing "bias" and for parameters owned by `torch.nn.LayerNorm`.
  LayerNorm2d (a different class), layer-scale gammas, embeddings and learned tokens are decayed:
  that asymmetry is the reference's and is kept deliberately.
"""

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class ParamRule:
    name: str
    lr_group: str  # "vision" | "base"
    lr_scale: float
    weight_decay: float
    trainable: bool


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _layernorm_param_names(model):
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            for pname, _ in module.named_parameters(recurse=False):
                names.add(f"{module_name}.{pname}" if module_name else pname)
    return names


def param_rules(model, cfg):
    """Every parameter's lr group, lr multiplier, weight decay and trainability, in order."""
    layernorm_params = _layernorm_param_names(model)
    trunk = model.image_encoder.trunk
    num_layers = trunk.get_num_layers()
    rules = []
    for name, _ in model.named_parameters():
        lr_group = "vision" if name.startswith("image_encoder.") else "base"
        lr_scale = 1.0
        if name.startswith("image_encoder.trunk.") and not fnmatch.fnmatchcase(name, "*pos_embed*"):
            layer_id = trunk.get_layer_id(name[len("image_encoder.trunk.") :])
            lr_scale = cfg.layer_decay ** (num_layers + 1 - layer_id)
        no_decay = "bias" in name or name in layernorm_params
        trainable = (not cfg.trainable or _matches(name, cfg.trainable)) and not _matches(name, cfg.frozen)
        rules.append(ParamRule(name, lr_group, lr_scale, 0.0 if no_decay else cfg.weight_decay, trainable))
    return rules


def format_param_rules(rules):
    """A printable table of `param_rules`."""
    lines = [f"{'parameter':70s} {'lr group':8s} {'lr scale':>9s} {'wd':>5s} trainable"]
    for r in rules:
        lines.append(f"{r.name:70s} {r.lr_group:8s} {r.lr_scale:9.6f} {r.weight_decay:5.2f} {'yes' if r.trainable else 'no'}")
    return "\n".join(lines)


def apply_freezing(model, rules):
    """Frozen parameters stop requiring gradients (so they get none and no optimizer state)."""
    by_name = dict(model.named_parameters())
    for r in rules:
        by_name[r.name].requires_grad_(r.trainable)


def build_param_groups(model, cfg):
    """AdamW groups, one per (lr group, lr scale, weight decay); frozen parameters excluded."""
    rules = param_rules(model, cfg)
    apply_freezing(model, rules)
    by_name = dict(model.named_parameters())
    groups = {}
    for r in rules:
        if not r.trainable:
            continue
        key = (r.lr_group, r.lr_scale, r.weight_decay)
        if key not in groups:
            peak = cfg.vision_lr if r.lr_group == "vision" else cfg.base_lr
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr_group": r.lr_group,
                "lr_scale": r.lr_scale,
                "peak_lr": peak * r.lr_scale,
                "lr": peak * r.lr_scale,
                "weight_decay": r.weight_decay,
            }
        groups[key]["params"].append(by_name[r.name])
        groups[key]["param_names"].append(r.name)
    return list(groups.values())


def build_optimizer(model, cfg):
    groups = build_param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    # One fused kernel per step instead of a few per parameter tensor, for plain CUDA tensors
    # (FSDP's sharded DTensors keep the default multi-tensor implementation).
    fused = bool(params) and all(p.is_cuda and not isinstance(p, DTensor) for p in params)
    return torch.optim.AdamW(groups, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def lr_factor(step, cfg):
    """Multiplier of each group's peak lr at optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "rsqrt":
        return 1.0 / math.sqrt(1.0 + (step - cfg.warmup_steps) / cfg.rsqrt_timescale)
    if cfg.schedule == "cosine":
        span = max(cfg.total_steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        r = cfg.min_lr_ratio
        return r + 0.5 * (1 - r) * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {cfg.schedule!r} (cosine, constant, rsqrt)")


class LRScheduler:
    """Sets every group's lr for the coming optimizer step; its state is the step count."""

    def __init__(self, optimizer, cfg):
        self.optimizer, self.cfg = optimizer, cfg
        self.step_count = 0
        self._apply()

    def _apply(self):
        factor = lr_factor(self.step_count, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor

    def step(self):
        self.step_count += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"step_count": self.step_count}

    def load_state_dict(self, state):
        self.step_count = int(state["step_count"])
        self._apply()
