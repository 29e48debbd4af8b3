"""DeepSpeed ZeRO (stage 1, 2 or 3 from a JSON file in ds_configs/) with this project's AdamW
parameter groups and learning-rate schedule passed in as client objects.

The trainer owns batch size, accumulation and clipping; the JSON owns ZeRO and communication
settings. A JSON that sets what the trainer owns is refused rather than silently overridden.
"""

import json
import math
import os

import deepspeed
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

from .engine import Engine, TrainingStep, make_optimizer
from .safe_load import deepspeed_globals, weights_only_loads

TRAINER_OWNED = {
    "train_batch_size": "data.datasets[].batch_size",
    "train_micro_batch_size_per_gpu": "data.datasets[].batch_size",
    "gradient_accumulation_steps": "train.grad_accum_steps",
    "gradient_clipping": "train.grad_clip",
    "optimizer": "optim (AdamW groups are passed in)",
    "scheduler": "optim.schedule (the schedule is passed in)",
}


def load_ds_config(path, cfg):
    try:
        with open(path) as f:
            ds_config = json.load(f)
    except OSError as exc:
        raise FileNotFoundError(f"train.deepspeed_config: cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"train.deepspeed_config: {path} is not valid JSON: {exc}") from exc
    clashes = [f"{key} (set {owner} instead)" for key, owner in TRAINER_OWNED.items() if key in ds_config]
    if clashes:
        raise ValueError(f"{path}: keys owned by the trainer config: {'; '.join(clashes)}")
    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{path}: zero_optimization.stage must be 0-3, got {stage!r}")
    # Batch size varies per dataset; DeepSpeed only uses this number for its own bookkeeping.
    ds_config["train_micro_batch_size_per_gpu"] = 1
    ds_config["gradient_accumulation_steps"] = cfg.train.grad_accum_steps
    # A clipping threshold is always set so that DeepSpeed computes (and reports) the grad norm.
    ds_config["gradient_clipping"] = cfg.train.grad_clip if cfg.train.grad_clip > 0 else 1e12
    ds_config.setdefault("steps_per_print", 10**12)  # the trainer logs
    return ds_config


class DeepSpeedEngine(Engine):
    name = "deepspeed"

    def __init__(self, model, cfg, dist_info):
        super().__init__(cfg, dist_info)
        self.ds_config = load_ds_config(cfg.train.deepspeed_config, cfg)
        self.zero_stage = self.ds_config.get("zero_optimization", {}).get("stage", 0)
        self.train_step = TrainingStep(model, cfg, dist_info.rank)
        optimizer, scheduler = make_optimizer(model, cfg)
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.train_step, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config, dist_init_required=False
        )
        self._make_ema()

    def train_micro_batch(self, batch, micro_batch, is_last_micro):
        losses = self.ds(batch, micro_batch)
        self.ds.backward(losses["core_loss"])  # scaled by 1 / accumulation steps inside
        if not is_last_micro:
            self.ds.step()  # only counts the micro-step: DeepSpeed steps at the boundary
        return losses

    def step(self):
        if not self.ds.is_gradient_accumulation_boundary():
            raise RuntimeError("DeepSpeed is not at a gradient-accumulation boundary: micro-batch count out of step")
        self.ds.step()  # clips, skips the update if the norm is not finite, steps the schedule
        grad_norm = self.ds.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else math.nan
        return self.after_step(grad_norm)

    def named_grads(self):
        # Each call assembles one parameter's gradient from the ZeRO partitions (a collective).
        grads = []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                grad = safe_get_full_grad(p)
                if grad is not None:
                    grads.append((name, grad))
        return grads

    def save(self, folder):
        client_state = {"ema": {k: v.cpu() for k, v in self.ema_state_dict().items()}}
        parent, tag = os.path.split(os.path.abspath(folder))
        self.ds.save_checkpoint(parent, tag=tag, client_state=client_state, save_latest=False)

    def load(self, folder):
        parent, tag = os.path.split(os.path.abspath(folder))
        # DeepSpeed unpickles its files with weights_only=False: make every read inside weights-only.
        with weights_only_loads(folder, deepspeed_globals()):
            path, client_state = self.ds.load_checkpoint(
                parent, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {folder}")
        if self.ema is not None:
            self.ema.load_state_dict(client_state["ema"])

    def full_state_dict(self, ema=False):
        state = {}
        for name, p in self.model.named_parameters():
            # The fp32 master copy: module weights may be bf16 (bf16.enabled) or partitions (ZeRO-3).
            full = safe_get_full_fp32_param(p) if p.requires_grad else None
            state[name] = (full if full is not None else p.detach()).float().cpu().clone()
        for name, b in self.model.named_buffers():
            state[name] = b.detach().cpu().clone()
        if ema:
            state.update({k: v.cpu().clone() for k, v in self.ema.state_dict().items()})
        model_keys = self.model.state_dict().keys()
        return {k: state[k] for k in model_keys} if self.dist.is_main else {}
