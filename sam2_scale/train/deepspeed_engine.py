"""DeepSpeed ZeRO (stage 1, 2 or 3 from a JSON file in ds_configs/) with this project's AdamW
parameter groups and learning-rate schedule passed in as client objects.

The trainer owns batch size, accumulation and clipping; the JSON owns ZeRO and communication
settings. A JSON that sets what the trainer owns is refused rather than silently overridden.

Checkpoints: DeepSpeed's own files (one per rank: fast, for a resume on the same world size)
and beside them `elastic.pt`, the same state consolidated (fp32 master weights, AdamW moments
and step per parameter name, schedule, EMA): a resume on another world size sets each
parameter's ZeRO partitions from it through DeepSpeed's fragment API, whatever the stage.
"""

import json
import math
import os

import deepspeed
import torch
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_grad,
    safe_get_full_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    set_z3_leaf_module,
)

from ..checkpoints.layout import ELASTIC_FILE
from ..checkpoints.safe_load import deepspeed_globals, torch_load, weights_only_loads
from .engine import Engine, TrainingStep, make_optimizer

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")

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


def new_adam_step(group, param):
    """A zero AdamW step count made as torch's AdamW makes it: on the parameter's device for the
    fused and capturable kernels (fused AdamW on CUDA refuses a CPU one), a CPU scalar otherwise."""
    on_device = group.get("fused") or group.get("capturable")
    return torch.zeros((), dtype=torch.float32, device=param.device if on_device else "cpu")


class DeepSpeedEngine(Engine):
    name = "deepspeed"

    def __init__(self, model, cfg, dist_info):
        super().__init__(cfg, dist_info)
        self.ds_config = load_ds_config(cfg.train.deepspeed_config, cfg)
        self.zero_stage = self.ds_config.get("zero_optimization", {}).get("stage", 0)
        trunk_only = self.zero_stage == 3 and cfg.train.compile
        if trunk_only:
            # ZeRO-3 gathers a module's weights in hooks around its call and a child's on attribute
            # access, neither of which a compiled graph runs: it would see the empty partitions.
            # A Hiera block made a ZeRO-3 leaf is gathered whole by its own hook, outside its
            # compiled forward. The other regions cannot be leaves: a leaf's gradients are
            # reduced once per call of it, and memory attention, the memory encoder and the SAM
            # heads run once per frame. Under ZeRO-3 they stay eager.
            for block in model.image_encoder.trunk.blocks:
                set_z3_leaf_module(block, True)
        self.training_step = TrainingStep(model, cfg, dist_info.rank, compile_trunk_only=trunk_only)
        optimizer, scheduler = make_optimizer(model, cfg)
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.training_step, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config, dist_init_required=False
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
        elastic = self.consolidated_state()  # collective
        if self.dist.is_main:
            elastic.update(
                scheduler=self.scheduler.state_dict(),
                ema=client_state["ema"],
                counters={"global_steps": self.ds.global_steps, "global_samples": self.ds.global_samples},
            )
            torch.save(elastic, os.path.join(folder, ELASTIC_FILE))

    def load(self, folder, resharded=False):
        if resharded:
            return self._load_elastic(folder)
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

    # --- the world-size-independent copy -----------------------------------------------------
    @property
    def _adam(self):
        """The client AdamW: over ZeRO's flat fp32 partitions, or (stage 0 in fp32) the module's parameters."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def _link_adam_state(self):
        """Makes every parameter's view of its AdamW moments (DeepSpeed's fragment mapping) valid.
        DeepSpeed links the views once, right after its first group's first update, when the
        other groups have no moments yet: relinked here, after creating any missing moments
        as AdamW would (zeros, step 0), so that the fragment API reaches all of them."""
        group_of = {id(flat): group for group in self._adam.param_groups for flat in group["params"]}
        flats = [flat for group in self._adam.param_groups for flat in group["params"]]
        flats += getattr(self.optimizer, "fp32_partitioned_groups_flat", [])  # ZeRO-3's fp32 partitions
        for flat in flats:
            state = self._adam.state[flat]
            if "step" not in state:
                state["step"] = new_adam_step(group_of.get(id(flat), self._adam.defaults), flat)
            for key in ADAM_MOMENTS:
                state.setdefault(key, torch.zeros_like(flat, memory_format=torch.preserve_format))
        if hasattr(self.optimizer, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2 and the bf16 optimizer
            self.optimizer._hp_optimizer_states_linked = False
            self.optimizer._lazy_init_hp_params_optimizer_state()

    def consolidated_state(self):
        """Collective: fp32 master weight and AdamW moments of every trainable parameter by name,
        and the AdamW step; complete on every rank (rank 0 keeps it)."""
        self._link_adam_state()
        weights, moments = {}, {key: {} for key in ADAM_MOMENTS}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue  # frozen: rebuilt from the model's initialisation
            full = safe_get_full_fp32_param(p)
            weights[name] = (full if full is not None else p.detach()).float().cpu()
            for key in ADAM_MOMENTS:
                full = safe_get_full_optimizer_state(p, key)
                moments[key][name] = (full if full is not None else self._adam.state[p][key]).float().cpu()
        return {"weights": weights, **moments, "adam_step": self._adam_step()}

    def _adam_step(self):
        return max((float(state["step"]) for state in self._adam.state.values() if "step" in state), default=0.0)

    def _set_zero3_partition(self, param, value, key=None):
        """This rank's ZeRO-3 partition of `param`'s fp32 master (key None) or AdamW moment `key`.
        DeepSpeed's own setter reads past the end of the value for the last rank's padded
        partition when the size does not divide by the world size; the padding stays zero here."""
        partition, _ = self.optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=False, optim_state_key=key)
        start = partition.numel() * self.optimizer._get_param_partition_rank(param)
        piece = value.flatten()[start : start + partition.numel()]
        partition[: piece.numel()].copy_(piece)

    def _load_elastic(self, folder):
        path = os.path.join(folder, ELASTIC_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this DeepSpeed checkpoint can only be resumed on its own world size")
        state = torch_load(path)
        self._link_adam_state()
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if not p.requires_grad:
                    continue
                weight = state["weights"][name].to(self.dist.device)
                if hasattr(p, "ds_id"):  # ZeRO-3
                    for key in (None, *ADAM_MOMENTS):
                        self._set_zero3_partition(p, weight if key is None else state[key][name], key)
                elif hasattr(p, "_hp_mapping"):  # ZeRO-1/2 (or DeepSpeed's bf16 optimizer)
                    safe_set_full_fp32_param(p, weight)
                    for key in ADAM_MOMENTS:
                        safe_set_full_optimizer_state(p, state[key][name].to(self.dist.device), key)
                else:
                    p.copy_(weight)
                    for key in ADAM_MOMENTS:
                        self._adam.state[p][key].copy_(state[key][name])
            for adam_state in self._adam.state.values():
                if "step" in adam_state:
                    adam_state["step"] = torch.full_like(torch.as_tensor(adam_state["step"]), state["adam_step"])
            # The module's (bf16 or partitioned) parameters follow from the fp32 masters just set.
            if self.zero_stage == 3:
                for sub_group in range(len(self.optimizer.fp16_groups)):
                    self.optimizer._reassign_or_swap_out_partitioned_parameters(sub_group)
            elif hasattr(self.optimizer, "update_lp_params"):
                self.optimizer.update_lp_params()
        self.scheduler.load_state_dict(state["scheduler"])
        self.ds.global_steps = state["counters"]["global_steps"]
        self.ds.global_samples = state["counters"]["global_samples"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

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
