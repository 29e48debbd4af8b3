"""Metrics: device peak FLOP/s (for MFU; the FLOP counts are in flops.py), memory, and the sink
(W&B on rank 0, plus a JSON-lines file and a readable line on stdout, so a run can be followed
without W&B)."""

import dataclasses
import json
import resource
import time
import uuid
from pathlib import Path

import torch

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
    parts.append(f"mem {m['memory/peak_gib']:.2f} GiB")
    parts.append(f"data wait {m['time/data_wait_max_s']:.3f}s")
    if "data/skipped_samples" in m:
        parts.append(f"{int(m['data/skipped_samples'])} samples skipped")
    return " | ".join(parts)
