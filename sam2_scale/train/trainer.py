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

from .. import atomic
from ..checkpoints.layout import CheckpointError, read_meta
from ..checkpoints.safe_load import UnsafeCheckpointError
from ..config import ConfigError, load_config
from ..config import dump as dump_config
from ..data.batch import collate_clips
from ..data.mixing import MixedLoader
from ..data.streams import NoClipsError, clip_pipeline
from ..model import CheckpointFileError, CheckpointMismatchError, build_sam2, load_checkpoint
from .checkpoint import (
    Checkpointer,
    derive_rng_state,
    resize_accumulation,
    rng_state,
    set_rng_state,
)
from .distributed import cpu_has_native_bf16, init_distributed
from .evaluator import Evaluator
from .flops import MicroBatchFlops
from .garbage import GarbageCollection
from .metrics import MetricsSink, StepMetrics, peak_flops
from .preemption import EXIT_NONFINITE, EXIT_PREEMPTED, Preemption
from .strategies import build_engine


def log(message, dist_info):
    if dist_info.is_main:
        print(f"[train] {message}", flush=True)


def build_model(cfg, device):
    model = build_sam2(
        cfg.model.size,
        image_size=cfg.model.image_size,
        drop_path_rate=cfg.model.drop_path_rate,
        memory_attention_dropout=cfg.model.memory_attention_dropout,
        activation_checkpointing=cfg.model.activation_checkpointing,
        device=device,
    )
    if cfg.model.init_checkpoint:
        try:
            load_checkpoint(model, cfg.model.init_checkpoint)
        except (CheckpointFileError, CheckpointMismatchError) as exc:
            raise CheckpointFileError(f"model.init_checkpoint: {exc}") from None
    return model.train()


def train(cfg, resume="auto"):
    """One run of `cfg`; returns its exit code. Joins the process group if there is one (and then
    leaves it up: a driver may run several configs in one process, sharing compiled graphs)."""
    owns_group = not dist.is_initialized()
    dist_info = init_distributed(cfg.train.dist_timeout_s)
    device, rank, world = dist_info.device, dist_info.rank, dist_info.world_size
    out = Path(cfg.train.out_dir)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    preemption = Preemption(cfg.train.preempt_grace_s)
    garbage = GarbageCollection(cfg.train.gc_every)
    if device.type == "cpu":
        # Small gradients become denormal floats, which x86 CPUs process ~10x slower: flush them.
        torch.set_flush_denormal(True)
        if cfg.train.precision == "bf16" and not cpu_has_native_bf16():
            log("warning: this CPU has no native bf16 (AVX512-BF16 / AMX); bf16 matmuls run far slower than fp32", dist_info)

    checkpointer = Checkpointer(cfg.checkpoint.dir or out / "checkpoints", cfg.checkpoint.keep, dist_info, cfg.checkpoint.every)
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
    num_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them away
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
        atomic.write_text(out / "config.yaml", dump_config(cfg))

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
    flops = MicroBatchFlops(cfg, fused_attention=device.type == "cuda", num_scenarios=cfg.train.flop_scenarios) if peak else None
    if flops is not None:
        counting = time.perf_counter()
        for d in cfg.data.datasets:
            flops.prepare(d.num_frames, cfg.data.resolution, cfg.data.resolution)
        seconds = time.perf_counter() - counting
        log(f"FLOPs per micro-batch counted over {flops.num_scenarios} prompt scenarios ({seconds:.0f} s)", dist_info)
    evaluator = Evaluator.build(cfg, dist_info)

    if evaluator and start_step == 0:
        evaluator.maybe_run(engine, 0, sink)  # the untrained model: the baseline of the curve

    # The loop: each component decides for itself whether this step is one to act on.
    metrics = StepMetrics(cfg, sink, dist_info, flops, peak)
    micro_batches = metrics.micro_batches(_forever(loader), device)
    run_meta = {"strategy": engine.name, "wandb_run_id": sink.run_id, "config": dataclasses.asdict(cfg)}

    def trainer_state():  # collective (the loader gathers every rank's data position): only when saving
        return {"loader": loader.state_dict(), "rng": rng_state()}

    exit_code, step, stop = 0, start_step, False
    while step < total_steps:
        result = engine.train_step(micro_batches, step, with_grad_norms=metrics.due(step + 1))
        step += 1
        metrics.add(result)
        if result.skipped and _too_many_nonfinite(engine, result, step, cfg, dist_info):
            exit_code = EXIT_NONFINITE
            break
        metrics.maybe_log(step, result, engine, loader)
        garbage.maybe_collect(step)
        if evaluator and step < total_steps:
            evaluator.maybe_run(engine, step, sink)
        stop, save_now = preemption.poll(device)
        saved = checkpointer.maybe_save(
            step, engine, trainer_state, run_meta, force=stop or save_now or (step == total_steps and cfg.checkpoint.at_end)
        )
        if saved:
            log(f"checkpoint {saved}", dist_info)
        if stop:
            exit_code = _stopped(step, total_steps, preemption, evaluator, dist_info)
            break

    if exit_code == 0 and evaluator and not stop:
        evaluator.run_final(engine, step, sink)
    preemption.disarm()
    garbage.close()
    sink.finish()
    dist.barrier()
    if owns_group:
        dist.destroy_process_group()
    return exit_code


def dry_run(cfg):
    """Builds what a run needs on this process — the model, the engine, one batch from each
    dataset's stream — and stops: a config, shard set or strategy that cannot work fails here
    in a minute instead of after the job has waited in the queue. Writes nothing."""
    dist_info = init_distributed(cfg.train.dist_timeout_s)
    model = build_model(cfg, dist_info.device)
    engine = build_engine(model, cfg, dist_info)
    log(f"SAM 2.1 {cfg.model.size} at {cfg.model.image_size}px under {engine.name}: built", dist_info)
    for d in cfg.data.datasets:
        batch = collate_clips(next(iter(clip_pipeline(d, cfg.data))), dataset=d.name)
        log(
            f"{d.name}: first batch of {batch.num_clips} clip(s) x {batch.num_frames} frame(s), "
            f"{batch.num_objects} object(s), frames {tuple(batch.frames.shape)}",
            dist_info,
        )
    log("dry run: everything builds; nothing was trained or written", dist_info)
    dist.destroy_process_group()


def _forever(loader):
    while True:
        yield from loader


def _too_many_nonfinite(engine, result, step, cfg, dist_info):
    log(f"step {step}: non-finite gradient norm ({result.grad_norm}); update skipped", dist_info)
    if engine.nonfinite_steps < cfg.train.max_nonfinite_steps:
        return False
    log(
        f"stopping: {engine.nonfinite_steps} non-finite steps in a row (train.max_nonfinite_steps). "
        "Lower the learning rate or check the data; the last checkpoint is intact.",
        dist_info,
    )
    return True


def _stopped(step, total_steps, preemption, evaluator, dist_info):
    """The exit status after a stop signal, once the checkpoint is written."""
    if step == total_steps:  # the run is complete: nothing to requeue
        skipped = ", final evaluation skipped (python -m sam2_scale.eval scores the checkpoint)" if evaluator else ""
        log(f"stop signal during the last step: the run is complete; exit 0{skipped}", dist_info)
        return 0
    log(f"stopped by {preemption.stop_signal or 'a signal on another rank'} at step {step}; exit {EXIT_PREEMPTED}", dist_info)
    return EXIT_PREEMPTED


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
        "--print-config",
        action="store_true",
        help="print the resolved, validated config as YAML (each field with its meaning) and exit",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model, the engine (one process) and one batch of every dataset, then exit without training",
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
            print(dump_config(cfg), end="")
            return
        if not cfg.data.datasets:
            parser.error("the config has no data.datasets")
        if args.dry_run:
            return dry_run(cfg)
        code = train(cfg, resume=args.resume)
    except (
        ConfigError,
        CheckpointError,
        UnsafeCheckpointError,
        CheckpointFileError,
        CheckpointMismatchError,
        NoClipsError,
    ) as exc:
        # Errors of the inputs (config, checkpoint, data): their message says what to do.
        sys.exit(f"[train] error: {error_message(exc)}")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
