"""Metrics: device peak FLOP/s (for MFU; the FLOP counts are in flops.py), memory, the sums over
the steps between two log lines (`StepMetrics`), and the sink (W&B on rank 0, plus a JSON-lines
file and a readable line on stdout, so a run can be followed without W&B)."""

import dataclasses
import json
import resource
import time
import uuid
from pathlib import Path

import torch

from ..model.compile import compile_counts
from .distributed import all_reduce_max, all_reduce_sum

# Dense bf16 peak of one device, TFLOP/s (vendor datasheets, without sparsity).
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM / HBM3
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "MI300X": 1307.0,
}


def peak_flops(device, override_tflops=0.0):
    """Peak FLOP/s of `device`, or None where unknown (CPUs): MFU is then not reported."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in name:
            return tflops * 1e12
    return None


def peak_memory_bytes(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _jsonable(value):
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return float(value)


class MetricsSink:
    """Rank 0 writes; other ranks' calls are no-ops."""

    def __init__(self, cfg, out_dir, is_main, run_id=None):
        self.is_main = is_main
        self.run = None
        self.run_id = run_id
        if not is_main:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out_dir / "metrics.jsonl", "a")
        if cfg.wandb.mode != "disabled":
            import wandb

            self.run_id = run_id or uuid.uuid4().hex[:12]
            self.run = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity or None,
                name=cfg.wandb.name or out_dir.name,
                id=self.run_id,
                resume="allow",  # a requeued job continues the same run
                dir=str(out_dir),
                mode=cfg.wandb.mode,
                config=dataclasses.asdict(cfg),
            )

    def log(self, step, metrics, line=None):
        if not self.is_main:
            return
        record = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)
        if line:
            print(line, flush=True)

    def finish(self):
        if not self.is_main:
            return
        self.jsonl.close()
        if self.run is not None:
            self.run.finish()


def format_line(step, total, m):
    parts = [
        f"step {step}/{total}",
        f"loss {m['loss/core']:.4f} (mask {m['loss/mask']:.4f} dice {m['loss/dice']:.3f} "
        f"iou {m['loss/iou']:.3f} class {m['loss/class']:.3f})",
        f"lr {m['lr/base']:.2e}",
        f"gnorm {m['grad_norm/total']:.3f}",
        f"{m['throughput/clips_per_s']:.2f} clips/s",
        f"{m['throughput/frames_per_s']:.1f} frames/s",
    ]
    if "mfu" in m:
        parts.append(f"mfu {m['mfu']:.3f} (hfu {m['hfu']:.3f})")
    if "compile/graphs" in m:
        parts.append(f"{int(m['compile/graphs'])} compiled graphs, {int(m['compile/graph_breaks'])} breaks")
    parts.append(f"mem {m['memory/peak_gib']:.2f} GiB")
    parts.append(f"data wait {m['time/data_wait_max_s']:.3f}s")
    if "data/skipped_samples" in m:
        parts.append(f"{int(m['data/skipped_samples'])} samples skipped")
    return " | ".join(parts)


class StepMetrics:
    """Counts what the steps since the last log line did, and logs it every `train.log_every`
    steps and at the last one: losses (mean over every rank's micro-batches), lr per group, grad
    norms, throughput, MFU, memory, data wait, skipped samples, and under compile the graphs
    compiled and graph breaks met so far (the most of any rank). Logging is collective."""

    LOSS_KEYS = {"core_loss": "core", "loss_mask": "mask", "loss_dice": "dice", "loss_iou": "iou", "loss_class": "class"}

    def __init__(self, cfg, sink, dist_info, flops=None, peak=None):
        self.log_every, self.total_steps = cfg.train.log_every, cfg.optim.total_steps
        self.sink, self.dist, self.flops, self.peak = sink, dist_info, flops, peak
        self.compiling = cfg.train.compile
        self._reset()

    def _reset(self):
        self.losses, self.micro_batches_seen = {}, 0
        self.steps, self.time, self.clips, self.frames = 0, 0.0, 0, 0
        self.model_flops, self.hardware_flops = 0.0, 0.0
        self.data_wait, self.image_steps, self.video_steps = 0.0, 0, 0
        self.grad_norm = 0.0
        self._step_start, self._kinds = None, []

    def due(self, step):
        """Whether step `step` (counted from 1) ends with a log line."""
        return step % self.log_every == 0 or step == self.total_steps

    def micro_batches(self, data, device):
        """The batches of `data` on `device`, each counted (data wait, clips, frames, FLOPs) as it
        is drawn; the first one starts the step's clock."""
        while True:
            wait_start = time.perf_counter()
            if self._step_start is None:
                self._step_start = wait_start
            batch = next(data).to(device, non_blocking=True)
            self.data_wait += time.perf_counter() - wait_start
            if self.flops is not None:
                model_flops, hardware_flops = self.flops(batch)
                self.model_flops += model_flops
                self.hardware_flops += hardware_flops
            world = self.dist.world_size
            self.clips += batch.num_clips * world
            self.frames += batch.num_frames * batch.num_clips * world
            self._kinds.append(batch.num_frames > 1)
            yield batch

    def add(self, result):
        """The step whose micro-batches were drawn since the last call has given `result`."""
        for losses, is_video in zip(result.losses, self._kinds, strict=True):
            for key, short in self.LOSS_KEYS.items():
                self.losses[short] = self.losses.get(short, 0.0) + losses[key].detach().float()
            self.micro_batches_seen += 1
            self.video_steps += is_video
            self.image_steps += not is_video
        self.steps += 1
        self.time += time.perf_counter() - self._step_start
        self.grad_norm = result.grad_norm
        self._step_start, self._kinds = None, []

    def maybe_log(self, step, result, engine, loader):
        """Collective at the steps that log."""
        if not self.due(step):
            return
        metrics = self.summary(engine, loader)
        metrics.update({f"grad_norm/{k}": v for k, v in result.grad_norms.items() if k != "total"})
        self.sink.log(step, metrics, format_line(step, self.total_steps, metrics))
        self._reset()

    def summary(self, engine, loader):
        device, world = self.dist.device, self.dist.world_size
        keys = list(self.losses)
        wait_sum, skipped, micro_batches, *loss_sums = all_reduce_sum(
            [self.data_wait, loader.skipped, self.micro_batches_seen] + [float(self.losses[k]) for k in keys], device
        )
        wait_max, graphs, graph_breaks = all_reduce_max([self.data_wait, *compile_counts()], device)
        m = {f"loss/{k}": v / micro_batches for k, v in zip(keys, loss_sums)}
        m.update({f"lr/{group}": lr for group, lr in engine.learning_rates().items()})
        m.update(
            {
                "grad_norm/total": self.grad_norm,
                "throughput/clips_per_s": self.clips / self.time,
                "throughput/frames_per_s": self.frames / self.time,
                "throughput/clips_per_s_per_device": self.clips / self.time / world,
                "throughput/frames_per_s_per_device": self.frames / self.time / world,
                "time/step_s": self.time / self.steps,
                "time/data_wait_mean_s": wait_sum / world / self.steps,
                "time/data_wait_max_s": wait_max / self.steps,
                "memory/peak_gib": peak_memory_bytes(device) / 2**30,
                "steps/image": self.image_steps,
                "steps/video": self.video_steps,
                "steps/nonfinite_in_a_row": engine.nonfinite_steps,
                "data/skipped_samples": skipped,
            }
        )
        if self.compiling:
            m.update({"compile/graphs": graphs, "compile/graph_breaks": graph_breaks})
        if self.peak and self.model_flops:
            # This rank's FLOPs against one device's peak: every rank runs the same scenarios.
            m["mfu"] = self.model_flops / self.time / self.peak
            m["hfu"] = self.hardware_flops / self.time / self.peak
        return m
