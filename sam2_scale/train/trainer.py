"""The SAM 2.1 training loop, top to bottom. Parallelism lives behind `Engine` (ddp, deepspeed,
fsdp); this file never branches on the strategy.

    python -m sam2_scale.train --config configs/X.yaml [key.sub=value ...] [--resume auto|none|DIR]

Runs as a single process, under torchrun (`python -m sam2_scale.train.torchrun`, which passes stop
signals and the ranks' exit status through), or under srun with one task per device. Exit codes:
0 done (also when a stop signal arrives during the last step), 1 a config, checkpoint or dataset
that cannot work (the message says why), 75 preempted (checkpoint written: requeue), 76 forced
exit after a stop signal, 77 too many non-finite steps in a row.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from ..config import ConfigError, load_config
from ..data.mixing import MixedLoader
from ..data.streams import NoClipsError, SkipCounter
from ..eval import evaluate_videos, evaluate_vos, folder_videos, shard_videos
from ..model import build_sam2, load_checkpoint
from .checkpoint import (
    Checkpointer,
    CheckpointError,
    atomic_write_text,
    derive_rng_state,
    read_meta,
    resize_accumulation,
    rng_state,
    set_rng_state,
)
from .distributed import all_reduce_max, all_reduce_sum, cpu_has_native_bf16, init_distributed
from .flops import MicroBatchFlops
from .metrics import MetricsSink, format_line, peak_flops, peak_memory_bytes
from .preemption import EXIT_NONFINITE, EXIT_PREEMPTED, Preemption
from .safe_load import UnsafeCheckpointError
from .strategies import build_engine


def log(message, dist_info):
    if dist_info.is_main:
        print(f"[train] {message}", flush=True)


def build_model(cfg, device):
    model = build_sam2(
        cfg.model.size,
        image_size=cfg.model.image_size,
        drop_path_rate=cfg.model.drop_path_rate,
        activation_checkpointing=cfg.model.activation_checkpointing,
        device=device,
    )
    if cfg.model.init_checkpoint:
        load_checkpoint(model, cfg.model.init_checkpoint)
    return model.train()


class Evaluator:
    """Held-out J&F on rank 0 with consolidated (EMA when on) weights: the clip proxy every
    `eval.every` steps and, when `eval.protocol` names one, a full-video protocol on a small
    set every `eval.protocol_every` steps; both at the end of the run."""

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

    def __call__(self, engine, step, final=False):
        clip, full = self._due(step, final)
        weights = engine.full_state_dict(ema=engine.ema is not None)  # collective
        scores = {}
        if self.dist.is_main:
            if self.model is None:
                self.model = build_sam2(self.cfg.model.size, image_size=self.cfg.model.image_size, device=self.dist.device)
            self.model.load_state_dict(weights)
            dtype = torch.bfloat16 if self.cfg.train.precision == "bf16" else None
            if clip:
                result = evaluate_vos(self.model, self.cfg.eval, device=self.dist.device, autocast_dtype=dtype)
                scores.update({f"eval/clip_{k}": v for k, v in result.items()})
            if full:
                scores.update(self._full_protocol(dtype))
        dist.barrier()
        return scores

    def _full_protocol(self, dtype):
        e = self.cfg.eval
        skipped = SkipCounter()
        videos = folder_videos(e.protocol_data) if e.protocol_data else shard_videos(e.shards, skipped)
        result = evaluate_videos(
            self.model, videos, e.protocol, self.dist.device, dtype, max_videos=e.protocol_max_videos, progress=False, split=False
        )
        keys = ("J&F", "J", "F", "num_videos", "num_objects", "frames_per_s")
        return {f"eval/{e.protocol}_{k}": result[k] for k in keys}


def train(cfg, resume="auto"):
    dist_info = init_distributed()
    device, rank, world = dist_info.device, dist_info.rank, dist_info.world_size
    out = Path(cfg.train.out_dir)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    preemption = Preemption(cfg.train.preempt_grace_s)
    if device.type == "cpu":
        # Small gradients become denormal floats, which x86 CPUs process ~10x slower: flush them.
        torch.set_flush_denormal(True)
        if cfg.train.precision == "bf16" and not cpu_has_native_bf16():
            log("warning: this CPU has no native bf16 (AVX512-BF16 / AMX); bf16 matmuls run far slower than fp32", dist_info)

    checkpointer = Checkpointer(cfg.checkpoint.dir or out / "checkpoints", cfg.checkpoint.keep, dist_info)
    # Checked against this run (meta.json readable, same strategy, global batch) before the model is built.
    resume_from = checkpointer.resolve(resume, strategy=cfg.train.strategy)
    if resume_from is not None:
        saved = read_meta(resume_from)
        resized = resize_accumulation(saved, cfg, world)
        if saved["world_size"] != world:
            log(
                f"{resume_from} was written by {saved['world_size']} rank(s), this run has {world}: model and optimizer "
                f"state are resharded, the data position is dealt to the new ranks; gradient accumulation "
                f"{cfg.train.grad_accum_steps} -> {resized}",
                dist_info,
            )
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_accum_steps=resized))

    accum, total_steps = cfg.train.grad_accum_steps, cfg.optim.total_steps
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg, device)
    torch.manual_seed(cfg.train.seed + 1 + rank)  # dropout and drop-path differ per rank
    engine = build_engine(model, cfg, dist_info)
    loader = MixedLoader(cfg.data, steps_per_epoch=cfg.train.steps_per_epoch * accum, pin_memory=device.type == "cuda")

    start_step, run_id = 0, None
    if resume_from is not None:
        meta, trainer_state = checkpointer.load(resume_from, engine)
        try:
            loader.load_state_dict(trainer_state["loader"])
        except ValueError as exc:  # a data position this run's data config cannot continue
            raise CheckpointError(f"{resume_from}: {exc}") from None
        start_step, run_id = meta["step"], meta.get("wandb_run_id")
        if "rng" in trainer_state:
            set_rng_state(trainer_state["rng"])
        else:  # another world size: no saved state for this rank
            derive_rng_state(cfg.train.seed, start_step, rank)
        log(f"resumed from {resume_from} at step {start_step}", dist_info)
    sink = MetricsSink(cfg, out, dist_info.is_main, run_id=run_id)
    if dist_info.is_main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    num_params = sum(p.numel() for p in model.parameters())
    log(
        f"SAM 2.1 {cfg.model.size} ({num_params:,} parameters) at {cfg.model.image_size}px, strategy {engine.name}, "
        f"{world} rank(s) on {device.type}, precision {cfg.train.precision}",
        dist_info,
    )
    for d in cfg.data.datasets:
        log(
            f"global batch of {d.name}: {d.batch_size} clips x {accum} accumulation x {world} ranks = "
            f"{d.batch_size * accum * world} clips of {d.num_frames} frames",
            dist_info,
        )
    peak = peak_flops(device, cfg.train.peak_tflops)
    # Model and hardware FLOPs per micro-batch, averaged over prompt scenarios (only for MFU).
    flops = MicroBatchFlops(cfg, fused_attention=device.type == "cuda") if peak else None
    if flops is not None:
        counting = time.perf_counter()
        for d in cfg.data.datasets:
            flops.prepare(d.num_frames, cfg.data.resolution, cfg.data.resolution)
        seconds = time.perf_counter() - counting
        log(f"FLOPs per micro-batch counted over {flops.num_scenarios} prompt scenarios ({seconds:.0f} s)", dist_info)
    evaluator = Evaluator.build(cfg, dist_info)

    if evaluator and start_step == 0 and evaluator.due(0):
        sink.log(0, evaluator(engine, 0), line=None)  # the untrained model: the baseline of the curve

    data_iter = _forever(loader)
    window = _Window()
    exit_code = 0
    step, stop = start_step, False
    while step < total_steps:
        step_start = time.perf_counter()
        model_flops = hardware_flops = 0.0
        clips = frames = 0
        for micro in range(accum):
            wait_start = time.perf_counter()
            batch = next(data_iter).to(device, non_blocking=True)
            window.data_wait += time.perf_counter() - wait_start
            losses = engine.train_micro_batch(batch, step * accum + micro, micro == accum - 1)
            if flops is not None:
                batch_model_flops, batch_hardware_flops = flops(batch)
                model_flops += batch_model_flops
                hardware_flops += batch_hardware_flops
            clips += batch.num_clips
            frames += batch.num_frames * batch.num_clips
            window.add_losses(losses, is_video=batch.num_frames > 1)
        log_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == total_steps
        grad_norms = engine.grad_norms() if log_now else {}
        grad_norm = engine.step()
        step += 1
        step_time = time.perf_counter() - step_start
        window.add_step(step_time, clips * world, frames * world, model_flops, hardware_flops, grad_norm)

        if engine.nonfinite_steps:
            log(f"step {step}: non-finite gradient norm ({grad_norm}); update skipped", dist_info)
            if engine.nonfinite_steps >= cfg.train.max_nonfinite_steps:
                log(
                    f"stopping: {engine.nonfinite_steps} non-finite steps in a row (train.max_nonfinite_steps). "
                    "Lower the learning rate or check the data; the last checkpoint is intact.",
                    dist_info,
                )
                exit_code = EXIT_NONFINITE
                break

        if log_now:
            metrics = window.summary(engine, loader, device, world, peak)
            metrics.update({f"grad_norm/{k}": v for k, v in grad_norms.items() if k != "total"})
            sink.log(step, metrics, format_line(step, total_steps, metrics))
            window = _Window()
        if evaluator and step < total_steps and evaluator.due(step):
            sink.log(step, evaluator(engine, step), line=None)

        stop, save_now = preemption.poll(device)
        periodic = cfg.checkpoint.every and step % cfg.checkpoint.every == 0
        if stop or save_now or periodic or step == total_steps:
            state = {"loader": loader.state_dict(), "rng": rng_state()}
            path = checkpointer.save(
                step, engine, state, {"strategy": engine.name, "wandb_run_id": sink.run_id, "config": dataclasses.asdict(cfg)}
            )
            log(f"checkpoint {path}", dist_info)
        if stop and step == total_steps:  # the run is complete: nothing to requeue
            skipped = ", final evaluation skipped (python -m sam2_scale.eval scores the checkpoint)" if evaluator else ""
            log(f"stop signal during the last step: the run is complete; exit 0{skipped}", dist_info)
        elif stop:
            log(
                f"stopped by {preemption.stop_signal or 'a signal on another rank'} at step {step}; exit {EXIT_PREEMPTED}",
                dist_info,
            )
            exit_code = EXIT_PREEMPTED
            break

    if exit_code == 0 and evaluator and not stop:
        scores = evaluator(engine, step, final=True)
        sink.log(step, scores, line=f"[train] held-out {scores}" if scores else None)
    preemption.disarm()
    sink.finish()
    dist.barrier()
    dist.destroy_process_group()
    return exit_code


def _forever(loader):
    while True:
        yield from loader


class _Window:
    """Sums over the steps since the last log line."""

    LOSS_KEYS = {"core_loss": "core", "loss_mask": "mask", "loss_dice": "dice", "loss_iou": "iou", "loss_class": "class"}

    def __init__(self):
        self.losses, self.micro_batches = {}, 0
        self.steps, self.time, self.clips, self.frames = 0, 0.0, 0, 0
        self.model_flops, self.hardware_flops = 0.0, 0.0
        self.data_wait, self.image_steps, self.video_steps = 0.0, 0, 0
        self.grad_norm = 0.0

    def add_losses(self, losses, is_video):
        for key, short in self.LOSS_KEYS.items():
            value = losses[key].detach().float()
            self.losses[short] = self.losses.get(short, 0.0) + value
        self.micro_batches += 1
        self.video_steps += is_video
        self.image_steps += not is_video

    def add_step(self, step_time, clips, frames, model_flops, hardware_flops, grad_norm):
        self.steps += 1
        self.time += step_time
        self.clips += clips
        self.frames += frames
        self.model_flops += model_flops
        self.hardware_flops += hardware_flops
        self.grad_norm = grad_norm

    def summary(self, engine, loader, device, world, peak):
        """Collective: losses, data wait mean / max and skipped samples are gathered from every rank."""
        keys = list(self.losses)
        wait_sum, skipped, micro_batches, *loss_sums = all_reduce_sum(
            [self.data_wait, loader.skipped, self.micro_batches] + [float(self.losses[k]) for k in keys], device
        )
        (wait_max,) = all_reduce_max([self.data_wait], device)
        m = {f"loss/{k}": v / micro_batches for k, v in zip(keys, loss_sums)}  # the mean over every rank's micro-batches
        for group in engine.optimizer.param_groups:
            key = f"lr/{group.get('lr_group', 'base')}"
            m[key] = max(m.get(key, 0.0), group["lr"])
        step_time = self.time / self.steps
        m.update(
            {
                "grad_norm/total": self.grad_norm,
                "throughput/clips_per_s": self.clips / self.time,
                "throughput/frames_per_s": self.frames / self.time,
                "throughput/clips_per_s_per_device": self.clips / self.time / world,
                "throughput/frames_per_s_per_device": self.frames / self.time / world,
                "time/step_s": step_time,
                "time/data_wait_mean_s": wait_sum / world / self.steps,
                "time/data_wait_max_s": wait_max / self.steps,
                "memory/peak_gib": peak_memory_bytes(device) / 2**30,
                "steps/image": self.image_steps,
                "steps/video": self.video_steps,
                "steps/nonfinite_in_a_row": engine.nonfinite_steps,
                "data/skipped_samples": skipped,
            }
        )
        if peak and self.model_flops:
            # This rank's FLOPs against one device's peak: every rank runs the same scenarios.
            m["mfu"] = self.model_flops / self.time / peak
            m["hfu"] = self.hardware_flops / self.time / peak
        return m


def error_message(exc):
    """The message alone: an error raised in a DataLoader worker arrives wrapped in its traceback."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[-1].removeprefix(f"{type(exc).__module__}.{type(exc).__name__}: ")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config (see configs/); default: built-in defaults")
    parser.add_argument(
        "--resume",
        default="auto",
        help="auto: continue from the newest complete checkpoint of the run if there is one (default); "
        "none: start fresh; or a checkpoint folder",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved, validated config as YAML and exit without training"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key.sub=value overrides, e.g. train.strategy=fsdp optim.base_lr=1e-4; a number picks a list item: "
        "data.datasets.0.batch_size=2",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after --resume
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
            return
        if not cfg.data.datasets:
            parser.error("the config has no data.datasets")
        code = train(cfg, resume=args.resume)
    except (ConfigError, CheckpointError, UnsafeCheckpointError, NoClipsError) as exc:
        # Errors of the inputs (config, checkpoint, data): their message says what to do.
        sys.exit(f"[train] error: {error_message(exc)}")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
