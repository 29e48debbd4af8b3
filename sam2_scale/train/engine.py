"""The one interface the training loop sees of a parallelism strategy.

    engine.train_step(micro_batches, step, with_grad_norms)  -> StepResult: forward and backward
                                     of each micro-batch, clipping, the update (skipped when the
                                     grad norm is not finite); the engine owns the accumulation
    engine.learning_rates(), engine.has_ema, engine.nonfinite_steps      what the loop reports
    engine.train_micro_batch(batch, micro_batch, is_last_micro), engine.step(), engine.grad_norms()
                                     the parts of a step, for benchmarks and tests
    engine.save(folder) / load(folder, resharded)       sharded, collective; resharded: the
                                                        checkpoint has another world size
    engine.full_state_dict(ema=False)                   consolidated on rank 0, collective
    engine.consolidated_state()                         fp32 weights, AdamW moments and step by
                                                        parameter name, on rank 0, collective
    engine.optimizer_state_bytes()                      this rank's share

`ddp.py`, `fsdp.py` and `deepspeed_engine.py` implement it; `strategies.build_engine` picks one.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..checkpoints.safe_load import dcp_load, read_dcp_metadata
from ..model import TOP_LEVEL_MODULES, top_level_module
from ..model.attention import attention_kernels
from ..model.compile import compile_regions
from ..objective import MultiStepLoss, unroll_clip
from ..objective.prompts import PixelNoise, micro_batch_seeds, sample_scenario
from .optim import LRScheduler, apply_freezing, build_optimizer, param_rules


class TrainingStep(nn.Module):
    """SAM 2.1 and its objective as one module, so that the strategies' forward hooks (DDP's
    reducer, FSDP's unshard, DeepSpeed's engine) wrap the whole clip unroll.

    Prompts of micro-batch k are drawn from seeds derived from (seed, k) and the rank, so a
    resumed run draws what the uninterrupted one would have, with no generator state to carry.
    """

    def __init__(self, model, cfg, rank, compile_trunk_only=False):
        super().__init__()
        self.model = model
        self.prompt_cfg = cfg.prompts
        self.loss_fn = MultiStepLoss(cfg.loss)
        self.autocast_dtype = autocast_dtype(cfg)
        self.seed, self.rank = cfg.train.seed, rank
        self.attention_backends = cfg.model.attention_backends
        if cfg.train.compile:
            compile_regions(model, backend=cfg.train.compile_backend, trunk_only=compile_trunk_only)
            self.loss_fn.compile_step_terms(backend=cfg.train.compile_backend)

    def forward(self, batch, micro_batch):
        scenario_seed, pixel_seed = micro_batch_seeds(self.seed, micro_batch, self.rank)
        scenario = sample_scenario(batch.num_frames, self.prompt_cfg, np.random.default_rng(scenario_seed))
        noise = PixelNoise(pixel_seed, batch.objects_per_clip, batch.frames.device)
        dtype = self.autocast_dtype
        autocast = torch.autocast(batch.frames.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        with autocast, attention_kernels(self.attention_backends):
            outputs = unroll_clip(self.model, batch, scenario, noise, self.prompt_cfg)
        losses = self.loss_fn(outputs, batch.masks)
        if not losses["core_loss"].requires_grad:
            # Every frame was mask-prompted, so nothing depends on the weights. The backward (and
            # its collectives) must still run on every rank: tie a zero to one root parameter.
            anchors = [p for p in self.model.parameters(recurse=False) if p.requires_grad]
            if not anchors:
                raise RuntimeError("a batch without gradient and no trainable root parameter to carry a zero one")
            losses["core_loss"] = losses["core_loss"].detach() + 0.0 * anchors[0].sum()
        return losses


class EMA:
    """Exponential moving average of the trainable weights, held like the weights themselves
    (sharded DTensors under FSDP, replicated elsewhere), in fp32."""

    def __init__(self, named_params, decay):
        self.decay = decay
        self.params = dict(named_params)
        self.shadow = {name: p.detach().float().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self):
        names = list(self.shadow)
        shadow = [self.shadow[n] for n in names]
        current = [self.params[n].detach().float() for n in names]
        torch._foreach_lerp_(shadow, current, 1.0 - self.decay)

    def state_dict(self):
        return self.shadow

    def load_state_dict(self, state):
        for name, value in state.items():
            self.shadow[name].copy_(value)


@dataclass
class StepResult:
    """What one optimizer step gives the loop."""

    losses: list  # per micro-batch, the loss terms (device tensors: read them when logging)
    grad_norm: float  # total gradient norm before clipping
    grad_norms: dict = field(default_factory=dict)  # per top-level module, when asked for

    @property
    def skipped(self):
        """A gradient norm that is not finite: the update was not applied."""
        return not math.isfinite(self.grad_norm)


class Engine:
    """Shared behaviour, including the torch-optimizer step and DCP checkpoints that ddp and fsdp
    use; subclasses set `self.training_step`, `self.optimizer`, `self.scheduler` and implement the
    strategy-specific parts."""

    name = "base"

    def __init__(self, cfg, dist_info):
        self.cfg = cfg
        self.dist = dist_info
        self.accum = cfg.train.grad_accum_steps
        self.ema = None
        self.nonfinite_steps = 0

    @property
    def model(self):
        """The bare SAM2Base (its parameters may be shards)."""
        return self.training_step.model

    def _make_ema(self):
        if self.cfg.train.ema_decay > 0:
            self.ema = EMA([(n, p) for n, p in self.model.named_parameters() if p.requires_grad], self.cfg.train.ema_decay)

    def after_step(self, grad_norm):
        """Book-keeping shared by the strategies once the optimizer step has run (or been skipped)."""
        if math.isfinite(grad_norm):
            if self.ema is not None:
                self.ema.update()
            self.nonfinite_steps = 0
        else:
            self.nonfinite_steps += 1
        return grad_norm

    def train_step(self, micro_batches, step, with_grad_norms=False):
        """Optimizer step `step` (counted from 0) over the next `grad_accum_steps` batches of the
        iterator `micro_batches`, drawn one at a time. Micro-batch k of the step is number
        step * grad_accum_steps + k of the run, which seeds its prompts."""
        losses = []
        for k in range(self.accum):
            batch = next(micro_batches)
            losses.append(self.train_micro_batch(batch, step * self.accum + k, is_last_micro=k == self.accum - 1))
        grad_norms = self.grad_norms() if with_grad_norms else {}  # before the step clears the gradients
        return StepResult(losses, self.step(), grad_norms)

    def learning_rates(self):
        """The current lr of each lr group (the largest of its parameter groups)."""
        rates = {}
        for group in self.optimizer.param_groups:
            name = group.get("lr_group", "base")
            rates[name] = max(rates.get(name, 0.0), group["lr"])
        return rates

    @property
    def has_ema(self):
        return self.ema is not None

    # --- to implement --------------------------------------------------------------------
    def train_micro_batch(self, batch, micro_batch, is_last_micro):
        """Forward and backward of one micro-batch; `micro_batch` counts micro-batches over the
        run (it seeds the prompts)."""
        raise NotImplementedError

    def step(self):
        """Clip, then step optimizer and schedule unless the norm is not finite (torch optimizers;
        DeepSpeed does this inside its own step)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else math.inf
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        grad_norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)  # a DTensor under FSDP
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.after_step(grad_norm)

    def named_grads(self):
        """(name, this rank's gradient tensor or shard) for every parameter with a gradient."""
        raise NotImplementedError

    def grads_are_sharded(self):
        return False

    def save(self, folder):
        save_dcp(self, folder)

    def load(self, folder, resharded=False):
        load_dcp(self, folder)  # DCP reshards by itself: nothing differs on another world size

    def full_state_dict(self, ema=False):
        raise NotImplementedError

    def consolidated_state(self):
        """Collective: fp32 weights, AdamW moments and step of every trainable parameter by name,
        complete on rank 0. DeepSpeed checkpoints it for resumes on another world size; under
        ddp and fsdp DCP reshards by itself and this is only a view to compare."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optim_state = get_state_dict(self.model, self.optimizer, options=options)
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        adam = optim_state.get("state", {})
        state = {"weights": {n: model_state[n].float() for n in trainable if n in model_state}}
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = {n: adam[n][key].float() for n in trainable if key in adam.get(n, {})}
        state["adam_step"] = max((float(s["step"]) for s in adam.values() if "step" in s), default=0.0)
        return state

    def optimizer_state_bytes(self):
        """Bytes of optimizer state this rank holds (its shards only)."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # ZeRO wraps the client AdamW
        return plain_tensor_bytes(inner.state_dict()["state"])

    # --- shared -------------------------------------------------------------------------
    @torch.no_grad()
    def grad_norms(self):
        """L2 norm of the gradient of each top-level module and in total (identical on all ranks)."""
        names = list(TOP_LEVEL_MODULES) + ["other"]
        sq = torch.zeros(len(names), dtype=torch.float64, device=self.dist.device)
        for name, grad in self.named_grads():
            sq[names.index(top_level_module(name))] += grad.double().pow(2).sum()
        if self.grads_are_sharded():
            dist.all_reduce(sq)
        norms = {name: math.sqrt(v) for name, v in zip(names, sq.tolist()) if v > 0}
        norms["total"] = math.sqrt(sum(sq.tolist()))
        return norms

    def ema_state_dict(self):
        return self.ema.state_dict() if self.ema is not None else {}


def prepare_model(model, cfg):
    """Freezing before any wrapper: DDP and FSDP read `requires_grad` when they wrap."""
    apply_freezing(model, param_rules(model, cfg.optim))
    return model


def make_optimizer(model, cfg):
    optimizer = build_optimizer(model, cfg.optim)
    return optimizer, LRScheduler(optimizer, cfg.optim)


def autocast_dtype(cfg):
    return torch.bfloat16 if cfg.train.precision == "bf16" else None


def _dcp_state(engine):
    model_state, optim_state = get_state_dict(engine.model, engine.optimizer)
    return {
        "model": model_state,
        "optim": optim_state,
        "ema": engine.ema_state_dict(),
        "scheduler": engine.scheduler.state_dict(),
    }


def save_dcp(engine, folder):
    """Model, optimizer, schedule and EMA as torch.distributed.checkpoint shards (ddp, fsdp)."""
    dcp.save(_dcp_state(engine), checkpoint_id=folder)


def load_dcp(engine, folder):
    # Building the target state creates AdamW state for every parameter; a parameter that had not
    # had a gradient yet when the checkpoint was written has none in it, and must have none after.
    saved_keys = set(read_dcp_metadata(folder).state_dict_metadata)
    state = _dcp_state(engine)
    dcp_load(state, folder, planner=DefaultLoadPlanner(allow_partial_load=True))  # reads nothing that could run code
    set_state_dict(engine.model, engine.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for name, param in engine.model.named_parameters():
        if f"optim.state.{name}.step" not in saved_keys:
            engine.optimizer.state.pop(param, None)
    engine.scheduler.load_state_dict(state["scheduler"])
    if engine.ema is not None:
        engine.ema.load_state_dict(state["ema"])


def plain_tensor_bytes(state):
    """Bytes of the tensors in a (nested) optimizer state, counting only this rank's shards."""
    total = 0
    if isinstance(state, dict):
        return sum(plain_tensor_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(plain_tensor_bytes(v) for v in state)
    if isinstance(state, torch.Tensor):
        local = state.to_local() if hasattr(state, "to_local") else state
        total += local.numel() * local.element_size()
    return total
