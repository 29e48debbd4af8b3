"""The distributed trainer, run for real: 2 CPU processes over gloo, DeepSpeed ZeRO-2 and FSDP2,
launched the way srun launches them (one process per rank, rank from the environment)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tiny_run import ROOT, train, trainer_env, write_config
from tracking_driver import synthetic_clip

from sam2_scale.config import load_config
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2, load_checkpoint
from sam2_scale.train.checkpoint import Checkpointer
from sam2_scale.train.distributed import DistInfo, free_port
from sam2_scale.train.preemption import EXIT_HUNG, EXIT_NONFINITE, EXIT_PREEMPTED

# Real training runs, clusters or the whole demo: the full tier only (`make test`).
pytestmark = pytest.mark.slow


def launch(config, tmp_path, world=2, args=(), log_name="run", command=None):
    """Start `world` ranks as srun does: one process each, rank in the environment, one process
    group. Each runs the trainer with `config` and `args`, or `command`."""
    env = trainer_env(tmp_path)
    env.update(WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs, group = [], None
    for rank in range(world):
        log = open(tmp_path / f"{log_name}.rank{rank}.log", "w")
        procs.append(
            subprocess.Popen(
                command or [sys.executable, "-m", "sam2_scale.train", "--config", str(config), *args],
                env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=group or 0,
            )
        )
        group = group or procs[0].pid
    return procs


def wait(procs, tmp_path, log_name, timeout=400):
    codes = [p.wait(timeout=timeout) for p in procs]
    logs = "\n".join((tmp_path / f"{log_name}.rank{r}.log").read_text()[-3000:] for r in range(len(procs)))
    return codes, logs


def wait_for(predicate, procs, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a rank exited early with {[p.poll() for p in procs]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def latest_step(out_dir):
    pointer = out_dir / "checkpoints/latest"
    return int(pointer.read_text().strip().split("_")[1]) if pointer.is_file() else -1


def export(checkpoint, path, *extra):
    subprocess.run(
        [sys.executable, "-m", "sam2_scale.train.export", str(checkpoint), str(path), *extra],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=dict(os.environ, DS_ACCELERATOR="cpu"),
    )
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_train_preempt_kill_resume_is_bitwise_exact(strategy, training_shards, tmp_path):
    # 1. An uninterrupted run: the loss falls, W&B (offline) records the metrics, the full-video
    # protocol scores the consolidated weights at the end, the export loads. It saves only at its
    # last step, so the comparison also shows that saving and resuming leave no trace.
    ref_out = tmp_path / "ref"
    config = write_config(
        tmp_path / "ref.yaml",
        training_shards,
        ref_out,
        checkpoint={"every": 8},
        train={"strategy": strategy, "precision": "fp32", "log_every": 1},
        wandb={"mode": "offline"},
        eval={"protocol": "sav", "protocol_data": str(training_shards / "raw/davis"), "protocol_max_videos": 1},
    )
    codes, logs = wait(launch(config, tmp_path, log_name="ref"), tmp_path, "ref")
    assert codes == [0, 0], logs
    records = [json.loads(line) for line in (ref_out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss/core"] for r in records if "loss/core" in r]
    assert len(losses) == 8
    assert sum(losses[-3:]) < sum(losses[:3]) / 2, losses
    for key in ("grad_norm/total", "grad_norm/image_encoder", "lr/base", "throughput/frames_per_s", "time/data_wait_max_s"):
        assert all(key in r for r in records if "loss/core" in r), key
    (final,) = [r for r in records if "eval/sav_J&F" in r]
    assert final["step"] == 8 and final["eval/sav_num_videos"] == 1, final
    assert not any("eval/clip_J&F" in r for r in records), "no clip proxy without eval.shards"
    (run_dir,) = (ref_out / "wandb").glob("offline-run-*")
    (history,) = run_dir.glob("run-*.wandb")
    assert b"loss/core" in history.read_bytes() and b"grad_norm/total" in history.read_bytes()
    reference = export(ref_out, tmp_path / "ref.pt")
    load_checkpoint(build_sam2("tiny", image_size=64), tmp_path / "ref.pt")  # strict
    # The in-loop protocol scores what `python -m sam2_scale.eval` scores from the checkpoint files.
    standalone = tmp_path / "standalone.json"
    subprocess.run(
        [sys.executable, "-m", "sam2_scale.eval", str(ref_out), "--protocol", "sav", "--data", str(training_shards / "raw/davis"),
         "--max-videos", "1", "--precision", "fp32", "--json", str(standalone), "--no-progress"],
        cwd=ROOT, check=True, capture_output=True, env=dict(os.environ, DS_ACCELERATOR="cpu"),
    )  # fmt: skip
    assert json.loads(standalone.read_text())["J&F"] == pytest.approx(final["eval/sav_J&F"], abs=1e-6)

    # 2. The same run, stopped by SIGUSR1, killed with SIGKILL, resumed twice.
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "run.yaml", training_shards, out, train={"strategy": strategy, "precision": "fp32", "log_every": 1}
    )
    procs = launch(config, tmp_path, log_name="a")
    wait_for(lambda: latest_step(out) >= 2, procs)
    os.killpg(procs[0].pid, signal.SIGUSR1)
    codes, logs = wait(procs, tmp_path, "a")
    assert codes == [EXIT_PREEMPTED] * 2, logs
    preempted_at = latest_step(out)
    assert preempted_at >= 2 and (out / f"checkpoints/step_{preempted_at:08d}/meta.json").is_file()

    procs = launch(config, tmp_path, args=["--resume", "auto"], log_name="b")
    wait_for(lambda: latest_step(out) > preempted_at, procs)
    os.killpg(procs[0].pid, signal.SIGKILL)
    codes, logs = wait(procs, tmp_path, "b")
    assert codes == [-signal.SIGKILL] * 2, f"the kill did not land mid-run (exit codes {codes})\n{logs}"
    assert latest_step(out) < 8

    codes, logs = wait(launch(config, tmp_path, args=["--resume", "auto"], log_name="c"), tmp_path, "c")
    assert codes == [0, 0], logs
    assert "resumed from" in logs
    resumed = export(out, tmp_path / "resumed.pt")
    assert reference.keys() == resumed.keys()
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _disable_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0


def _clip(seed):
    frames, masks = synthetic_clip(3, 2, 64, seed=seed)
    return Batch.from_clip(frames, masks[:, :, 0])


def _two_clips(a, b):
    t, o = a.masks.shape[:2]
    idx = torch.cat([a.obj_to_frame_idx, b.obj_to_frame_idx + torch.tensor([0, 1])], dim=1)
    assert idx.shape == (t, 2 * o, 2)
    return Batch(torch.cat([a.frames, b.frames], dim=1), torch.cat([a.masks, b.masks], dim=1), idx)


def _one_step(strategy, info, batches, precision="fp32"):
    from sam2_scale.train.strategies import build_engine

    cfg = load_config(
        None,
        [
            f"train.strategy={strategy}",
            f"train.precision={precision}",
            f"train.grad_accum_steps={len(batches)}",
            *(["train.deepspeed_config=" + str(ROOT / "ds_configs/zero2.json")] if strategy == "deepspeed" else []),
            "prompts.prob_to_use_pt_input=0.0",  # mask prompts on frame 0: no random clicks
            "prompts.num_init_cond_frames=1",
            "optim.base_lr=1e-3",
            "optim.vision_lr=1e-3",
            "optim.warmup_steps=0",
            "optim.schedule=constant",
        ],
    )
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=64).train()
    _disable_dropout(model)
    engine = build_engine(model, cfg, info)
    result = engine.train_step(iter(batches), step=0, with_grad_norms=True)  # accumulates, then steps
    loss = sum(float(losses["core_loss"]) for losses in result.losses)
    return engine.full_state_dict(), engine.optimizer_state_bytes(), result, loss


def _engines_worker(rank, world, port, result_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ.update(MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    from sam2_scale.train.distributed import init_distributed

    info = init_distributed()
    a, b = _clip(10 * rank), _clip(10 * rank + 1)
    results, ddp_weights, ddp_bf16 = {}, None, None
    for strategy in ("ddp", "deepspeed", "fsdp"):
        accumulated, state_bytes, _, _ = _one_step(strategy, info, [a, b])
        together, _, _, _ = _one_step(strategy, info, [_two_clips(a, b)])
        _, _, bf16, bf16_loss = _one_step(strategy, info, [a], precision="bf16")
        if rank == 0:
            ddp_weights = ddp_weights or accumulated
            ddp_bf16 = ddp_bf16 or (bf16, bf16_loss)
            diff = max((accumulated[k].float() - together[k].float()).abs().max().item() for k in accumulated)
            vs_ddp = max((accumulated[k].float() - ddp_weights[k].float()).abs().max().item() for k in accumulated)
            moved = max((accumulated[k].float() - v.float()).abs().max().item() for k, v in build_reference().items())
            # bf16: the same loss and gradients (per top-level module) as DDP's, up to reduction order.
            bf16_vs_ddp = max(
                abs(bf16_loss - ddp_bf16[1]) / abs(ddp_bf16[1]),
                *(abs(bf16.grad_norms[k] - n) / max(n, 1e-12) for k, n in ddp_bf16[0].grad_norms.items()),
            )
            results[strategy] = dict(
                diff=diff, vs_ddp=vs_ddp, moved=moved, state_bytes=state_bytes, bf16_norm=bf16.grad_norm, bf16_vs_ddp=bf16_vs_ddp
            )
    if rank == 0:
        Path(result_file).write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def build_reference():
    torch.manual_seed(0)
    return build_sam2("tiny", image_size=64).state_dict()


def test_engines_accumulation_optimizer_sharding_and_bf16(tmp_path):
    """For ddp, deepspeed (ZeRO-2) and fsdp on 2 ranks: 2 micro-batches of 1 clip accumulated
    give the update of one micro-batch of 2 clips, and the same update under every strategy;
    sharded optimizer state is half of DDP's;
    a bf16 step has a finite gradient norm and, under every strategy, the loss and gradients of
    DDP's (one precision policy: autocast over fp32 weights)."""
    os.environ.setdefault("TMPDIR", str(tmp_path))
    result_file = tmp_path / "engines.json"
    mp.spawn(_engines_worker, args=(2, free_port(), str(result_file)), nprocs=2, join=True)
    results = json.loads(result_file.read_text())
    for strategy, r in results.items():
        assert r["moved"] > 1e-4, f"{strategy}: the step did not change the weights"
        assert r["diff"] < 1e-5 * max(1.0, r["moved"]) + 2e-6, f"{strategy}: accumulation differs by {r['diff']}"
        assert r["vs_ddp"] < 1e-5 * max(1.0, r["moved"]) + 2e-6, f"{strategy}: the update differs from DDP's by {r['vs_ddp']}"
        assert 0 < r["bf16_norm"] < float("inf"), f"{strategy}: bf16 step gave grad norm {r['bf16_norm']}"
        assert r["bf16_vs_ddp"] < 1e-4, f"{strategy}: bf16 loss or gradients off DDP's by {r['bf16_vs_ddp']:.1e}"
    ddp = results["ddp"]["state_bytes"]
    for strategy in ("deepspeed", "fsdp"):
        ratio = results[strategy]["state_bytes"] / ddp
        assert 0.4 < ratio < 0.6, f"{strategy} keeps {ratio:.2f} of DDP's optimizer state per rank"


def test_single_process_keeps_last_k_and_resumes_from_complete_checkpoints_only(ddp_run, tmp_path):
    out = ddp_run / "run"
    assert "global batch of sav: 1 clips x 1 accumulation x 1 ranks = 1 clips" in (ddp_run / "stdout.txt").read_text()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["mfu"] < 1 for r in records if "loss/core" in r), "FLOPs counted, over the given peak"
    # The EMA export differs from the weights and loads strictly.
    weights, ema = export(out, tmp_path / "w.pt"), export(out, tmp_path / "ema.pt", "--ema")
    load_checkpoint(build_sam2("tiny", image_size=64), tmp_path / "ema.pt")
    assert any(not torch.equal(weights[k], ema[k]) for k in weights)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000003", "step_00000004"]
    # A save that died half-way (no meta.json, or still .tmp) is never resumed from. In a copy
    # (hard links), so that the shared run stays as it is.
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(out / "checkpoints", ckpts, copy_function=os.link)
    (ckpts / "step_00000009.tmp").mkdir()
    (ckpts / "step_00000010").mkdir()
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    assert Checkpointer(ckpts, 2, info).resolve("auto") == ckpts / "step_00000004"
    (ckpts / "latest").unlink()  # a link to the shared run's pointer: replaced, not written through
    (ckpts / "latest").write_text("step_00000010")
    assert Checkpointer(ckpts, 2, info).resolve("auto") == ckpts / "step_00000004"
    with pytest.raises(FileNotFoundError, match="meta.json"):
        Checkpointer(ckpts, 2, info).resolve(str(ckpts / "step_00000010"))


def test_nonfinite_steps_are_skipped_then_stop(training_shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "c.yaml",
        training_shards,
        out,
        optim={"base_lr": 1e30, "vision_lr": 1e30, "total_steps": 20},
        train={"max_nonfinite_steps": 2, "log_every": 1},
        checkpoint={"every": 0},
    )
    result = train(tmp_path, config)
    assert result.returncode == EXIT_NONFINITE, result.stdout[-2000:] + result.stderr[-2000:]
    assert "non-finite steps in a row" in result.stdout


def test_a_deepspeed_json_setting_what_the_trainer_owns_is_refused(tmp_path):
    """(The config's own keys are tested in test_config.py.)"""
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}}))
    from sam2_scale.train.deepspeed_engine import load_ds_config

    with pytest.raises(ValueError, match="gradient_accumulation_steps .set train.grad_accum_steps"):
        load_ds_config(bad, load_config(None))


def test_forced_exit_when_the_checkpoint_after_a_stop_signal_hangs(tmp_path):
    code = (
        "import os, signal, time\n"
        "from sam2_scale.train.preemption import Preemption\n"
        "p = Preemption(grace_s=0.5)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "time.sleep(30)  # a save stuck in a collective\n"
    )
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_HUNG, result.stderr
    assert time.time() - start < 20 and "forcing exit" in result.stderr
