"""FSDP2 (`fully_shard`): parameters, gradients and optimizer state sharded over ranks.

Units: each Hiera block, each memory-attention layer (the repeated blocks whose weights and
activations dominate) and the root, which holds everything else. Parameters, gradients and
their reduction stay fp32; bf16 is autocast's, as under ddp and deepspeed: a bf16 parameter
policy would also run the residual stream and the position tables in bf16, another model's
numerics than Meta's and the other strategies'.
"""

from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ..model import repeated_blocks
from .engine import Engine, TrainingStep, make_optimizer


class FSDPEngine(Engine):
    name = "fsdp"

    def __init__(self, model, cfg, dist_info):
        super().__init__(cfg, dist_info)
        self.training_step = TrainingStep(model, cfg, dist_info.rank)
        mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
        options = dict(mesh=mesh, reshard_after_forward=cfg.train.fsdp_reshard_after_forward)
        for block in repeated_blocks(model):
            fully_shard(block, **options)
        fully_shard(self.training_step, **options)
        self.optimizer, self.scheduler = make_optimizer(model, cfg)
        self._make_ema()

    def train_micro_batch(self, batch, micro_batch, is_last_micro):
        # Every micro-batch reduce-scatters and the shards accumulate (as ZeRO-2 does). Skipping
        # the sync until the last one keeps unsharded gradients, and torch 2.13's FSDP2 then
        # fails on units a micro-batch left unused (memory attention on image batches) under bf16.
        losses = self.training_step(batch, micro_batch)
        (losses["core_loss"] / self.accum).backward()
        return losses

    def named_grads(self):
        return [
            (n, p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad)
            for n, p in self.model.named_parameters()
            if p.grad is not None
        ]

    def grads_are_sharded(self):
        return True

    def full_state_dict(self, ema=False):
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=options)
        if ema:
            # Every rank takes part in gathering each tensor; rank 0 keeps the result.
            full = {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in self.ema.state_dict().items()}
            state.update(full)
        return state if self.dist.is_main else {}
