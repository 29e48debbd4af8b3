"""Training throughput on one GPU: this project's step against Meta's, in the same run.

Everything the GPU figures of BENCHMARKS.md need, in one run of at most `--time-limit` seconds
(9 minutes by default), most important rows first:

1. Meta's reference training step (`benchmarks/reference_step.py`: SAM2Train + its loss, bf16
   autocast, AdamW, clipping) at the recipe setting: 1 clip of 8 frames x 3 objects, 1024².
2. This project's step (the ddp Engine: prompt simulation, batched unroll, loss, backward,
   optimizer) for the rows of `--plan`: clips per GPU (until memory passes `--memory-cap` GiB or
   runs out), eager or with `train.compile`, activation-checkpointing regions. Clips/s, frames/s,
   MFU (model FLOPs: no recomputation, averaged over prompt scenarios), HFU, peak memory, and the
   seconds before the timed steps (build, compile, warm-up).
3. Where the time of the best setting goes (torch.profiler, GPU time per component and the
   share of the step the GPU sits idle).
4. Scaled-dot-product attention kernels (flash, efficient, cuDNN, math) at the model's shapes.
5. A host-sync check of the step under `torch.cuda.set_sync_debug_mode("error")`.
6. One end-to-end row: `python -m sam2_scale.train` with the real loader on synthetic 1024²
   shards, its data wait as a share of the step.
Large first, then base_plus. Each phase runs in its own process (peak memory is its own), and each
row within its own time cap: every row ends in the tables as a result or as the reason it has
none (out of memory, the memory cap, time, or its error's last line).

    python benchmarks/gpu_throughput.py --json $OUT/gpu.json --write BENCHMARKS.md
    python benchmarks/gpu_throughput.py --toy      # the same phases and plan on a CPU, at tiny, 64²
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Training throughput (`benchmarks/gpu_throughput.py`)"
# Each phase's share of the time limit; what a phase leaves unused goes to the next.
PHASES = {"meta": 0.12, "ours": 0.6, "profile": 0.07, "attention": 0.03, "syncs": 0.03, "e2e": 0.15}
CHECKPOINTING = {"none": [], "hiera": ["hiera"], "hiera+mem": ["hiera", "memory_attention"]}
# Rows within the time budget, most important first: the baseline of the last table (1 clip,
# eager), then clips per GPU and compilation at the memory-saving settings that let them fit.
# `plan_seconds` checks that they fit the "ours" phase's share on an H100 (tests/test_gpu_benchmark.py).
DEFAULT_PLAN = [
    "large/eager/none/1",
    "large/eager/hiera/2",
    "large/compile/hiera/2",
    "base_plus/eager/none/1",
]
# What the estimate of a row's time rests on. Measured: one H200, 2026-11-27, the previous step
# (BENCHMARKS.md): seconds per step at 1 clip, eager, no checkpointing, and the slowdown of
# checkpointing the Hiera blocks. Assumed until a GPU run reports them (its "first steps s"
# column): an H100 1.25x slower; steps linear in clips (an upper bound: one clip leaves the GPU
# mostly idle); checkpointing memory attention too 1.2x slower again; a compiled step no faster
# than eager; a size's first compile 150 s (dynamo and AOT tracing take 122 s for tiny on one
# core of the 2-core test machine, and large has as many graphs; Triton's code generation runs
# on the GPU machine's 16 cores); 20 s to build a row.
H200_STEP_S = {"large": 1 / 0.832, "base_plus": 1 / 0.873, "tiny": 1 / 0.966}
CHECKPOINT_SLOWDOWN = {"none": 1.0, "hiera": 1 / 0.72, "hiera+mem": 1.2 / 0.72}
H100_SLOWDOWN, FIRST_COMPILE_S, ROW_BUILD_S = 1.25, 150.0, 20.0


# --------------------------------------------------------------------------- shared helpers


def setting(args, size):
    """Shapes and precision of a run: the recipe's, or the CPU smoke form."""
    if args.toy:
        return dict(size="tiny", image_size=64, frames=3, objects=2, precision="fp32", backend="eager")
    return dict(size=size, image_size=1024, frames=8, objects=3, precision="bf16", backend="inductor")


def synthetic_batch(s, clips, device, seed=0):
    """`clips` clips of s["frames"] uint8 frames and s["objects"] moving-disc masks each."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from tracking_driver import synthetic_clip

    from sam2_scale.data.batch import collate_clips

    parts = []
    for b in range(clips):
        frames, masks = synthetic_clip(s["frames"], s["objects"], s["image_size"], seed=seed + b)
        frames = ((frames - frames.min()) / (frames.max() - frames.min()) * 255).to(torch.uint8)
        parts.append({"frames": frames, "masks": masks[:, :, 0], "source": f"clip{b}", "frame_indices": [], "object_ids": []})
    return collate_clips(parts).to(device)


def timed(step, device, warmup, steps, deadline, min_steps=3):
    """Mean seconds per call of step(i) over `steps` calls after `warmup` (fewer, but at least
    `min_steps`, once past `deadline`), and the peak memory."""
    import torch

    for i in range(warmup):
        step(i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, done = time.perf_counter(), 0
    for i in range(warmup, warmup + steps):
        step(i)
        done += 1
        if time.perf_counter() > deadline and done >= min_steps:
            break
    sync(device)
    seconds = (time.perf_counter() - start) / done
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return seconds, peak, done


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device):
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def last_line(exc):
    """An exception as one table cell: its type and the last line of its message."""
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[-1]


class RowTimeout(Exception):
    """A row ran past its own time cap."""


class RowTimeCap:
    """Raises RowTimeout in this (the phase's) process once `seconds` have passed, whatever the
    row is doing: a cold compile or a slow step cannot take the rows after it. The timed steps
    stop by themselves at `deadline` (80 % of the cap), so a row that is only slow still reports."""

    def __init__(self, seconds):
        self.seconds = max(1.0, seconds)
        self.deadline = time.perf_counter() + 0.8 * self.seconds
        self.expired = False  # also when the compiler re-raised the timeout as its own error

    def reason(self):
        return f"time: over the row's {self.seconds:.0f} s cap"

    def __enter__(self):
        def expire(signum, frame):
            self.expired = True
            raise RowTimeout(self.reason())

        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


def failed_row(record, exc, cap):
    """The record of a row that raised: its time cap, or its error's last line."""
    return {**record, "skipped": cap.reason()} if cap.expired else {**record, "error": last_line(exc)}


def plan_seconds(plan, warmup, steps, slowdown=H100_SLOWDOWN):
    """Estimated seconds of the "ours" phase for `plan` (see the constants above DEFAULT_PLAN)."""
    total, compiled = 0.0, set()
    for row in plan:
        size, compile_, name, clips = parse_row(row)
        step_s = H200_STEP_S[size] * slowdown * CHECKPOINT_SLOWDOWN[name] * clips
        first = 0.0
        if compile_ and size not in compiled:
            compiled.add(size)
            first = FIRST_COMPILE_S
        total += ROW_BUILD_S + first + step_s * (warmup + steps + (4 if compile_ else 0))  # 4 covering warm-ups
    return total


def emit(record):
    print("RESULT " + json.dumps(record), flush=True)


def load_cfg(s, clips, compile_, regions, extra=()):
    from sam2_scale.config import load_config

    return load_config(
        None,
        [
            f"model.size={s['size']}",
            f"model.image_size={s['image_size']}",
            f"data.resolution={s['image_size']}",
            f"train.precision={s['precision']}",
            "train.strategy=ddp",
            f"train.compile={str(compile_).lower()}",
            f"train.compile_backend={s['backend']}",
            f"model.activation_checkpointing=[{','.join(regions)}]",
            *extra,
        ],
    )


def covering_micro_batches(cfg, num_frames):
    """Micro-batch indices whose scenarios use every kind of prompt (click, box, mask, and
    corrections on later frames): a compile warm-up that meets every graph before the timing."""
    import numpy as np

    from sam2_scale.objective.prompts import micro_batch_seeds, sample_scenario

    wants = [
        lambda sc: sc.prompt_kind.get(0) == "click" and len(sc.frames_to_correct) > len(sc.init_cond_frames),
        lambda sc: sc.prompt_kind.get(0) == "box" and len(sc.frames_to_correct) > len(sc.init_cond_frames),
        lambda sc: not sc.use_pt_input and len(sc.init_cond_frames) == 1,
        lambda sc: not sc.use_pt_input and len(sc.init_cond_frames) == 2,
    ]
    found = []
    for want in wants:
        for k in range(10_000, 20_000):  # outside the range the timed steps use
            sc = sample_scenario(num_frames, cfg.prompts, np.random.default_rng(micro_batch_seeds(cfg.train.seed, k, 0)[0]))
            if want(sc):
                found.append(k)
                break
    return found


# --------------------------------------------------------------------------- phases (one process each)


def phase_meta(args, device, deadline):
    """Meta's training step, 1 clip per GPU, each size."""
    import torch
    from reference_step import build_reference_step, reference_batch

    from sam2_scale.data.transforms import normalize_frames

    for size in sizes_run(args):
        s = setting(args, size)
        record = {"phase": "meta", "size": s["size"], "clips": 1}
        cap, ref_step, ref_batch = RowTimeCap(min(args.row_time_limit, deadline + 30 - time.perf_counter())), None, None
        try:
            with cap:
                torch.manual_seed(0)
                ref_step = build_reference_step(s["size"], s["image_size"], device, s["precision"])
                batch = synthetic_batch(s, 1, device)
                ref_batch = reference_batch(normalize_frames(batch.frames), batch.masks, batch.obj_to_frame_idx)
                seconds, peak, done = timed(
                    lambda i, f=ref_step, b=ref_batch: f(b), device, args.warmup, args.steps, cap.deadline
                )
        except torch.OutOfMemoryError:
            emit({**record, "oom": True})
            continue
        except Exception as exc:
            emit(failed_row(record, exc, cap))
            continue
        finally:
            del ref_step, ref_batch
            torch.cuda.empty_cache() if device.type == "cuda" else None
        emit(
            {
                **record,
                "step_s": seconds,
                "clips_per_s": 1 / seconds,
                "peak_gib": peak,
                "steps": done,
                "device": device_name(device),
            }
        )


def sizes_run(args):
    """The sizes of --sizes, once each (under --toy they all stand for tiny)."""
    first = {}
    for size in args.sizes:
        first.setdefault(setting(args, size)["size"], size)
    return list(first.values())


def phase_ours(args, device, deadline):
    """This project's step for the rows of the plan of each size, in order."""
    import torch

    from sam2_scale.model import build_sam2
    from sam2_scale.train.distributed import init_distributed
    from sam2_scale.train.flops import MicroBatchFlops
    from sam2_scale.train.metrics import peak_flops
    from sam2_scale.train.strategies import build_engine

    info = init_distributed()
    peak = peak_flops(device, args.peak_tflops)
    flops, too_big = {}, set()
    for row in args.plan:
        size, compile_, name, clips = parse_row(row)
        s = setting(args, size)
        record = {"phase": "ours", "row": row, "size": s["size"], "clips": clips, "compile": compile_, "ckpt": name}
        if size not in args.sizes:
            continue
        if (s["size"], compile_, name) in too_big and clips > 1:
            emit({**record, "skipped": "fewer clips were over the memory cap or out of memory"})
            continue
        if time.perf_counter() > deadline:
            emit({**record, "skipped": "time: the phase's share of --time-limit was spent"})
            continue
        started, engine, model = time.perf_counter(), None, None
        cap = RowTimeCap(min(args.row_time_limit, deadline + 30 - started))
        try:
            with cap:
                cfg = load_cfg(s, clips, compile_, CHECKPOINTING[name])
                torch.manual_seed(0)
                model = build_sam2(s["size"], image_size=s["image_size"], drop_path_rate=0.1, device=device).train()
                engine = build_engine(model, cfg, info)
                batch = synthetic_batch(s, clips, device)
                warm = covering_micro_batches(cfg, s["frames"]) if compile_ else []

                def step(i, engine=engine, batch=batch, warm=warm):
                    engine.train_micro_batch(batch, warm[i] if i < len(warm) else i, True)
                    engine.step()

                seconds, mem, done = timed(step, device, len(warm) + args.warmup, args.steps, cap.deadline)
        except torch.OutOfMemoryError:
            emit({**record, "oom": True})
            too_big.add((s["size"], compile_, name))
            continue
        except Exception as exc:  # the row's own failure or its time cap: reported, and the next row runs
            emit(failed_row(record, exc, cap))
            continue
        finally:
            del engine, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        first_steps_s = time.perf_counter() - started - seconds * done  # build, compile, warm-up
        if mem > args.memory_cap:
            too_big.add((s["size"], compile_, name))  # more clips would only take more
        if (name, s["size"]) not in flops:
            fused = device.type == "cuda"
            flops[(name, s["size"])] = MicroBatchFlops(cfg, fused_attention=fused, num_scenarios=args.flop_scenarios)
        model_flops, hardware_flops = flops[(name, s["size"])](batch)
        emit(
            {
                **record,
                "step_s": seconds,
                "clips_per_s": clips / seconds,
                "frames_per_s": clips * s["frames"] / seconds,
                "peak_gib": mem,
                "steps": done,
                "mfu": model_flops / seconds / peak if peak else None,
                "hfu": hardware_flops / seconds / peak if peak else None,
                "tflop_per_step": model_flops / 1e12,
                "first_steps_s": first_steps_s,
                "device": device_name(device),
            }
        )
    torch.distributed.destroy_process_group()


def parse_row(row):
    """'large/compile/hiera/4' -> ("large", True, "hiera", 4)."""
    size, mode, name, clips = row.split("/")
    if mode not in ("eager", "compile") or name not in CHECKPOINTING:
        raise SystemExit(f"row {row!r}: expected SIZE/eager|compile/{'|'.join(CHECKPOINTING)}/CLIPS")
    return size, mode == "compile", name, int(clips)


def phase_profile(args, device, deadline):
    """GPU time per component of the chosen setting, from torch.profiler ranges."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from sam2_scale.model import build_sam2
    from sam2_scale.train.distributed import init_distributed
    from sam2_scale.train.strategies import build_engine

    info = init_distributed()
    s = setting(args, args.sizes[0])
    cfg = load_cfg(s, args.profile_clips, args.profile_compile, CHECKPOINTING[args.profile_ckpt])
    torch.manual_seed(0)
    model = build_sam2(s["size"], image_size=s["image_size"], drop_path_rate=0.1, device=device).train()
    engine = build_engine(model, cfg, info)
    batch = synthetic_batch(s, args.profile_clips, device)
    warm = covering_micro_batches(cfg, s["frames"]) if args.profile_compile else []
    for k in warm + list(range(args.warmup)):
        engine.train_micro_batch(batch, k, True)
        engine.step()

    # Ranges around the eager calls into each component (compiled regions sit inside them).
    labelled = []

    def label(obj, attr, name):
        original = getattr(obj, attr)

        def wrapper(*a, **kw):
            with record_function(name):
                return original(*a, **kw)

        setattr(obj, attr, wrapper)
        labelled.append((obj, attr))

    label(model, "forward_image", "image encoder")
    label(model.memory_attention, "forward", "memory attention")
    label(model, "_forward_sam_heads", "SAM heads (all passes)")
    label(model, "_encode_new_memory", "memory encoder")
    label(engine.training_step.loss_fn, "forward", "loss")
    label(engine.training_step, "forward", "forward (all)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 3
    sync(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for i in range(steps):
            with record_function("micro-batch (forward + backward)"):
                engine.train_micro_batch(batch, 1000 + i, True)
            with record_function("optimizer"):
                engine.step()
        sync(device)
    wall = (time.perf_counter() - start) / steps
    for obj, attr in labelled:
        delattr(obj, attr) if attr in vars(obj) else None
    use_device = device.type == "cuda"
    totals = {}
    for event in prof.key_averages():
        if event.key in (
            "image encoder",
            "memory attention",
            "SAM heads (all passes)",
            "memory encoder",
            "loss",
            "forward (all)",
            "micro-batch (forward + backward)",
            "optimizer",
        ):
            totals[event.key] = (event.device_time_total if use_device else event.cpu_time_total) / 1e6 / steps
    busy = (
        sum(e.device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA") / 1e6 / steps
        if use_device
        else None
    )
    parts = {k: v for k, v in totals.items()}
    if "micro-batch (forward + backward)" in totals and "forward (all)" in totals:
        parts["backward"] = totals["micro-batch (forward + backward)"] - totals["forward (all)"]
    emit(
        {
            "phase": "profile",
            "size": s["size"],
            "clips": args.profile_clips,
            "compile": args.profile_compile,
            "ckpt": args.profile_ckpt,
            "wall_step_s": wall,
            "gpu_busy_s": busy,
            "parts_s": parts,
            "device": device_name(device),
        }
    )
    torch.distributed.destroy_process_group()


def phase_attention(args, device, deadline):
    """Forward + backward time of each SDPA kernel at the shapes the model runs, bf16."""
    import torch
    import torch.nn.functional as F

    from sam2_scale.config.schema import ATTENTION_BACKENDS
    from sam2_scale.model.attention import attention_kernels

    if device.type != "cuda":
        emit({"phase": "attention", "skipped": "CUDA only"})
        return
    clips = args.profile_clips
    shapes = {  # (batch, heads, queries, keys, head dim, dropout)
        "memory attention, cross (7 memories + 16 pointers)": (3 * clips, 1, 4096, 7 * 4096 + 64, 256, 0.1),
        "memory attention, self": (3 * clips, 1, 4096, 4096, 256, 0.1),
        "Hiera global block (large, stage 3)": (8 * clips, 8, 4096, 4096, 72, 0.0),
        "Hiera window block (large, stage 3, 16x16)": (8 * clips * 16, 8, 256, 256, 72, 0.0),
        "decoder, image to tokens": (3 * clips, 8, 4096, 16, 16, 0.0),
    }
    for name, (b, h, nq, nk, d, p) in shapes.items():
        q = torch.randn(b, h, nq, d, device=device, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, h, nk, d, device=device, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, h, nk, d, device=device, dtype=torch.bfloat16, requires_grad=True)
        record = {"phase": "attention", "shape": name, "dims": [b, h, nq, nk, d], "dropout": p, "ms": {}}
        for backend in ATTENTION_BACKENDS:
            try:
                with attention_kernels([backend]):

                    def run(q=q, k=k, v=v, p=p):
                        F.scaled_dot_product_attention(q, k, v, dropout_p=p).sum().backward()

                    for _ in range(3):
                        run()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(10):
                        run()
                    end.record()
                    torch.cuda.synchronize()
                record["ms"][backend] = start.elapsed_time(end) / 10
            except RuntimeError as exc:  # this kernel does not take these inputs
                record["ms"][backend] = f"n/a ({str(exc).splitlines()[0][:60]})"
        emit(record)


def phase_syncs(args, device, deadline):
    """The step under torch.cuda.set_sync_debug_mode("error"): any host-device sync raises."""
    import torch

    from sam2_scale.model import build_sam2
    from sam2_scale.train.engine import TrainingStep

    if device.type != "cuda":
        emit({"phase": "syncs", "skipped": "CUDA only (the CPU test suite checks the same with HostSyncs)"})
        return
    s = setting(args, args.sizes[0])
    cfg = load_cfg(s, 2, False, [])
    model = build_sam2(s["size"], image_size=s["image_size"], device=device).train()
    step = TrainingStep(model, cfg, rank=0)
    batch = synthetic_batch(s, 2, device)
    step(batch, 0)["core_loss"].backward()  # per-device constants are built once
    results = {}
    for k in covering_micro_batches(cfg, s["frames"]):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step(batch, k)["core_loss"].backward()
            results[k] = "no sync"
        except RuntimeError as exc:
            results[k] = str(exc).splitlines()[0][:200]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    emit({"phase": "syncs", "micro_batches": results})


def phase_e2e(args, device, deadline):
    """The trainer with the real loader on synthetic shards of the benchmark's resolution."""
    s = setting(args, args.sizes[0])
    work = Path(tempfile.mkdtemp(prefix="e2e_"))
    started = time.perf_counter()
    shards = args.e2e_shards
    if not shards:  # made here: needs PyAV (benchmarks/gpu_prepare.py makes them elsewhere)
        run = lambda cmd: subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)  # noqa: E731
        size = f"{s['image_size']}x{s['image_size']}"
        run([sys.executable, "data_prep/make_synthetic.py", "--out", str(work / "raw"), "--videos", "4" if args.toy else "8",
             "--images", "0", "--heldout", "0", "--frames", str(4 * s["frames"] + 8), "--size", size])  # fmt: skip
        run([sys.executable, "data_prep/make_shards.py", "sav", "--videos", str(work / "raw/sav/videos"),
             "--annotations", str(work / "raw/sav/annotations"), "--out", str(work / "sav"), "--items-per-shard", "1",
             "--no-progress"])  # fmt: skip
        shards = str(work / "sav/shard-*.tar")
    prep_s = time.perf_counter() - started
    clips = args.profile_clips
    steps = 8 if args.toy else 12
    config = {
        "model": {
            "size": s["size"],
            "image_size": s["image_size"],
            "drop_path_rate": 0.1,
            "activation_checkpointing": CHECKPOINTING[args.profile_ckpt],
        },
        "optim": {"total_steps": steps, "warmup_steps": 1},
        "data": {
            "resolution": s["image_size"],
            "num_workers": 2 if args.toy else 12,
            "shuffle_buffer": 4,
            "datasets": [
                {
                    "name": "sav",
                    "shards": str(ROOT / shards) if not Path(shards).is_absolute() else shards,
                    "kind": "video",
                    "batch_size": clips,
                    "num_frames": s["frames"],
                    "max_num_objects": s["objects"],
                }
            ],
        },
        "train": {
            "out_dir": str(work / "run"),
            "precision": s["precision"],
            "log_every": steps // 4,
            "compile": args.profile_compile,
            "compile_backend": s["backend"],
            "peak_tflops": args.peak_tflops,
            "flop_scenarios": args.flop_scenarios,
        },
        "checkpoint": {"every": 0, "at_end": False},  # a multi-GB save measures nothing here
        "wandb": {"mode": "disabled"},
    }
    import yaml

    (work / "e2e.yaml").write_text(yaml.safe_dump(config))
    timeout = max(60.0, deadline - time.perf_counter())
    stopped = ""
    try:
        subprocess.run(
            [sys.executable, "-m", "sam2_scale.train", "--config", str(work / "e2e.yaml"), "--resume", "none"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        stopped = f"stopped at the phase's {timeout:.0f} s"  # the windows logged so far still count
    except subprocess.CalledProcessError as exc:
        emit({"phase": "e2e", "error": f"exit {exc.returncode}: {(exc.stderr or '')[-300:]}"})
        return
    metrics = work / "run/metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    windows = [r for r in records if "time/step_s" in r]
    if not windows:
        emit({"phase": "e2e", "skipped": f"time: {stopped} before the first log line"})
        return
    windows = windows[1:] or windows  # the first window holds compilation, when there are others
    step_s = sum(r["time/step_s"] for r in windows) / len(windows)
    wait = sum(r["time/data_wait_max_s"] for r in windows) / len(windows)
    emit(
        {
            "phase": "e2e",
            "size": s["size"],
            "clips": clips,
            "compile": args.profile_compile,
            "ckpt": args.profile_ckpt,
            "step_s": step_s,
            "clips_per_s": clips / step_s,
            "data_wait_share": wait / step_s,
            "mfu": windows[-1].get("mfu"),
            "prep_s": prep_s,
            "steps": windows[-1]["step"],
            "stopped": stopped,
        }
    )


# --------------------------------------------------------------------------- driver and report


def run_phase(args, phase, remaining):
    """One phase in its own process; its RESULT lines are the records."""
    from sam2_scale.train.distributed import free_port

    cmd = [sys.executable, __file__, "--phase", phase, "--deadline-in", str(remaining), "--settings", json.dumps(vars(args))]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "4")
    # A free port, not a fixed one: another job (or benchmark) on the machine may hold any given port.
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    try:
        # A phase stops starting rows at its deadline; the margin lets a started row finish.
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=remaining + 45)
        out, err = proc.stdout, proc.stderr
        failed = proc.returncode != 0
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err, failed = f"phase {phase} timed out", True
    records = [json.loads(line[len("RESULT ") :]) for line in out.splitlines() if line.startswith("RESULT ")]
    if failed or not records:  # kept even after rows reported: the rows after it never ran
        records.append({"phase": phase, "error": "\n".join((out + err).splitlines()[-25:])})
    return records


def unreported_rows(records, args):
    """A record for Meta's row of each size and every plan row that reported nothing (its phase
    ended first), saying so: no row leaves the tables silently."""
    reported = {r["row"] for r in records if r.get("phase") == "ours" and "row" in r}
    ended = next((r["error"] for r in records if r.get("phase") == "ours" and "row" not in r and r.get("error")), "")
    reason = f"not run: the phase ended ({ended.splitlines()[-1] if ended else 'no record'})"
    missing = []
    if "meta" in args.phases:
        meta_reported = {r.get("size") for r in records if r.get("phase") == "meta"}
        meta_ended = next((r["error"] for r in records if r.get("phase") == "meta" and "size" not in r), "no record")
        for size in sizes_run(args):
            if setting(args, size)["size"] not in meta_reported:
                why = f"not run: the phase ended ({meta_ended.splitlines()[-1]})"
                missing.append({"phase": "meta", "size": setting(args, size)["size"], "clips": 1, "skipped": why})
    if "ours" not in args.phases:
        return missing
    for row in dict.fromkeys(args.plan):
        size, compile_, name, clips = parse_row(row)
        if size in args.sizes and row not in reported:
            row_record = {"phase": "ours", "row": row, "size": setting(args, size)["size"], "clips": clips}
            missing.append({**row_record, "compile": compile_, "ckpt": name, "skipped": reason})
    return missing


def report(records, args, torch_version):
    """Markdown tables: ratios against Meta's step of the same size, measured in this run."""
    device = next((r["device"] for r in records if "device" in r), "?")
    s0 = setting(args, args.sizes[0])
    lines = [
        f"### {s0['image_size']}², {s0['frames']} frames x {s0['objects']} objects per clip, {s0['precision']}, one {device} — "
        f"{datetime.date.today().isoformat()} (torch {torch_version})",
        "",
        "| size | step | clips / GPU | compile | act. ckpt | clips/s | × Meta | MFU | HFU | peak GiB | first steps s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    meta = {r["size"]: r for r in records if r.get("phase") == "meta" and "clips_per_s" in r}
    for r in records:
        if r.get("phase") not in ("meta", "ours"):
            continue
        if "clips_per_s" not in r:
            why = "OOM" if r.get("oom") else r.get("skipped") or (r.get("error") or "")[-80:].replace("\n", " ").replace("|", "/")
            lines.append(
                f"| {r.get('size', '?')} | {r['phase']} | {r.get('clips', '')} | {r.get('compile', '')} | {r.get('ckpt', '')} "
                f"| {why} | | | | | |"
            )
            continue
        base = meta.get(r["size"])
        ratio = f"{r['clips_per_s'] / base['clips_per_s']:.2f}×" if base else "n/a"
        mfu = f"{r['mfu']:.3f}" if r.get("mfu") is not None else "n/a"
        hfu = f"{r['hfu']:.3f}" if r.get("hfu") is not None else "n/a"
        step = "Meta reference" if r["phase"] == "meta" else "this project (ddp)"
        lines.append(
            f"| {r['size']} | {step} | {r['clips']} | {r.get('compile', '')} | {r.get('ckpt', 'none')} | {r['clips_per_s']:.2f} "
            f"| {ratio} | {mfu} | {hfu} | {r['peak_gib']:.1f} | {r.get('first_steps_s', 0):.0f} |"
        )
    for r in records:
        if r.get("phase") == "profile" and "parts_s" in r:
            lines += [
                "",
                f"Where the time goes ({r['size']}, {r['clips']} clips, compile {r['compile']}, ckpt {r['ckpt']}): "
                f"{r['wall_step_s']:.3f} s per step, GPU busy {r['gpu_busy_s'] or 0:.3f} s",
                "",
                "| component | device s per step (CPU time on a CPU) | share of the step |",
                "|---|---|---|",
            ]
            lines += [
                f"| {k} | {v:.3f} | {v / r['wall_step_s']:.0%} |" for k, v in sorted(r["parts_s"].items(), key=lambda kv: -kv[1])
            ]
        if r.get("phase") == "attention" and "ms" in r:
            times = ", ".join(f"{k} {v:.2f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in r["ms"].items())
            lines.append(f"- attention, {r['shape']} {r['dims']}: {times}")
        if r.get("phase") == "syncs" and "micro_batches" in r:
            lines.append(f"- host syncs under set_sync_debug_mode('error'): {r['micro_batches']}")
        if r.get("phase") == "e2e" and "clips_per_s" in r:
            same = [o for o in records if o.get("phase") == "ours" and "clips_per_s" in o and o["size"] == r["size"]]
            same = [o for o in same if (o["clips"], o["compile"], o["ckpt"]) == (r["clips"], r["compile"], r["ckpt"])]
            versus = f", {r['clips_per_s'] / same[0]['clips_per_s']:.2f}× the synthetic-batch row" if same else ""
            lines.append(
                f"- end to end (`python -m sam2_scale.train`, real loader, {r['clips']} clips, compile {r['compile']}, "
                f"ckpt {r['ckpt']}): {r['clips_per_s']:.2f} clips/s{versus}, data wait {r['data_wait_share']:.0%} of the step"
                + (f" ({r['steps']} steps, {r['stopped']})" if r.get("stopped") else "")
            )
        if r.get("error") and r.get("phase") not in ("meta", "ours"):
            lines.append(f"- {r['phase']}: failed: {r['error'][-200:]}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--toy",
        action="store_true",
        help="CPU smoke form: every size and row of the plan at tiny, 64², 3 frames x 2 objects, fp32; "
        "compile rows captured by dynamo and run eagerly (backend eager)",
    )
    parser.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES), help="what to run (default: all)")
    parser.add_argument("--sizes", nargs="+", default=["large", "base_plus"])
    parser.add_argument(
        "--plan",
        nargs="+",
        default=DEFAULT_PLAN,
        help="rows of this project's step, SIZE/eager|compile/CHECKPOINTED/CLIPS, most important first "
        f"(CHECKPOINTED: {', '.join(CHECKPOINTING)}); default: %(default)s",
    )
    parser.add_argument("--profile-clips", type=int, default=2, help="clips per GPU of the profile, attention and e2e rows")
    parser.add_argument("--profile-compile", action="store_true", help="profile and e2e with train.compile")
    parser.add_argument("--profile-ckpt", choices=CHECKPOINTING, default="hiera")
    parser.add_argument("--memory-cap", type=float, default=75.0, help="stop adding clips past this peak GiB (80 GB cards)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row, at most (default 5; at least 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1; compile adds its own)")
    parser.add_argument("--flop-scenarios", type=int, default=8, help="prompt scenarios averaged for the FLOP count")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: the built-in table)")
    parser.add_argument("--time-limit", type=float, default=540, help="seconds for the whole run (default 540)")
    parser.add_argument(
        "--row-time-limit",
        type=float,
        default=240,
        help="seconds for one row, build and compile included (default 240); a row past it is reported as such",
    )
    parser.add_argument("--e2e-shards", help="SA-V shards of the end-to-end row (default: made in the run, which needs PyAV)")
    parser.add_argument("--json", help="also write every raw record to this file")
    parser.add_argument("--write", help="append the tables to this Markdown file (BENCHMARKS.md)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-in", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.phase:  # inside a phase's own process: the driver's settings, then the phase
        phase, deadline = args.phase, time.perf_counter() + args.deadline_in
        args = argparse.Namespace(**json.loads(args.settings))
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() and not args.toy else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(0)
        else:
            torch.set_flush_denormal(True)
        globals()[f"phase_{phase}"](args, device, deadline)
        return

    if args.toy:  # the plan as given (the default one too), each row at the toy setting
        args.steps, args.warmup, args.profile_clips, args.flop_scenarios = 3, 1, 2, 1
    import torch

    start, records, carried = time.perf_counter(), [], 0.0
    for phase in args.phases:
        remaining = args.time_limit - (time.perf_counter() - start)
        budget = min(remaining, PHASES[phase] * args.time_limit + carried)
        if budget < 15:
            records.append({"phase": phase, "skipped": "time"})
            continue
        print(f"[gpu_throughput] {phase}: {budget:.0f} s of the {remaining:.0f} s left", flush=True)
        phase_start = time.perf_counter()
        new = run_phase(args, phase, budget)
        carried = max(0.0, budget - (time.perf_counter() - phase_start))
        records += new
        for r in new:
            print(json.dumps(r), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1))
    records += unreported_rows(records, args)
    table = report(records, args, torch.__version__)
    print(table)
    if args.write:
        add_run(args.write, HEADING, table)


if __name__ == "__main__":
    main()
