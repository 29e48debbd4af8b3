"""Held-out evaluation during training: the clip proxy and the full-video protocols, shared by
all ranks, with the consolidated (EMA when on) weights."""

import torch
import torch.distributed as dist

from ..data.streams import SkipCounter
from ..eval import evaluate_videos, evaluate_vos, folder_videos, shard_videos
from ..model import build_sam2


class Evaluator:
    """Held-out J&F with consolidated (EMA when on) weights: the clip proxy every `eval.every`
    steps and, when `eval.protocol` names one, a full-video protocol on a small set every
    `eval.protocol_every` steps; both at the end of the run. The ranks share the videos: no rank
    waits a whole evaluation in a collective (where NCCL's watchdog would end the job)."""

    def __init__(self, cfg, dist_info):
        self.cfg, self.dist = cfg, dist_info
        self.model = None

    @classmethod
    def build(cls, cfg, dist_info):
        return cls(cfg, dist_info) if cfg.eval.shards or cfg.eval.protocol != "none" else None

    def _due(self, step, final):
        e = self.cfg.eval
        clip = bool(e.shards) and (final or (e.every > 0 and step % e.every == 0))
        full = e.protocol != "none" and (final or (e.protocol_every > 0 and step % e.protocol_every == 0))
        return clip, full

    def due(self, step, final=False):
        return any(self._due(step, final))

    def maybe_run(self, engine, step, sink):
        """Collective at the steps that evaluate (step 0: the untrained model, the curve's baseline)."""
        if self.due(step):
            sink.log(step, self(engine, step), line=None)

    def run_final(self, engine, step, sink):
        scores = self(engine, step, final=True)
        sink.log(step, scores, line=f"[train] held-out {scores}" if scores else None)

    def __call__(self, engine, step, final=False):
        clip, full = self._due(step, final)
        weights = engine.full_state_dict(ema=engine.has_ema)  # collective; complete on rank 0
        if self.model is None:
            self.model = build_sam2(self.cfg.model.size, image_size=self.cfg.model.image_size, device=self.dist.device)
        with torch.no_grad():
            state = self.model.state_dict()
            for name, tensor in state.items():
                if self.dist.is_main:
                    tensor.copy_(weights[name])
                dist.broadcast(tensor, src=0)
        dtype = torch.bfloat16 if self.cfg.train.precision == "bf16" else None
        scores = {}
        if clip:
            result = evaluate_vos(self.model, self.cfg.eval, device=self.dist.device, autocast_dtype=dtype, split=True)
            scores.update({f"eval/clip_{k}": v for k, v in result.items()})
        if full:
            scores.update(self._full_protocol(dtype))
        return scores

    def _full_protocol(self, dtype):
        e = self.cfg.eval
        skipped = SkipCounter()
        videos = folder_videos(e.protocol_data) if e.protocol_data else shard_videos(e.shards, skipped)
        result = evaluate_videos(
            self.model, videos, e.protocol, self.dist.device, dtype, max_videos=e.protocol_max_videos, progress=False, split=True
        )
        keys = ("J&F", "J", "F", "num_videos", "num_objects", "frames_per_s")
        return {f"eval/{e.protocol}_{k}": result[k] for k in keys}
