"""DistributedDataParallel: every rank holds the whole model and optimizer (the baseline)."""

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from .engine import Engine, TrainingStep, make_optimizer


class DDPEngine(Engine):
    name = "ddp"

    def __init__(self, model, cfg, dist_info):
        super().__init__(cfg, dist_info)
        self.training_step = TrainingStep(model, cfg, dist_info.rank)
        # Dynamo's DDP optimizer splits a compiled graph at gradient-bucket edges; the regions are
        # single blocks already, whose gradients reach the reducer as each region's backward ends.
        # Splitting them buys no overlap, and the splitter fails on regions with dynamic shapes.
        torch._dynamo.config.optimize_ddp = False
        # Image steps leave the memory modules unused and mask prompts the prompt encoder:
        # the reducer has to look for unused parameters every step.
        self.ddp = DistributedDataParallel(
            self.training_step,
            device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        self.optimizer, self.scheduler = make_optimizer(model, cfg)
        self._make_ema()

    def train_micro_batch(self, batch, micro_batch, is_last_micro):
        sync = contextlib.nullcontext() if is_last_micro else self.ddp.no_sync()
        with sync:
            losses = self.ddp(batch, micro_batch)
            (losses["core_loss"] / self.accum).backward()
        return losses

    def named_grads(self):
        return [(n, p.grad) for n, p in self.model.named_parameters() if p.grad is not None]

    def full_state_dict(self, ema=False):
        if not self.dist.is_main:
            return {}
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if ema:
            state.update({k: v.cpu().clone() for k, v in self.ema.state_dict().items()})
        return state
