"""Resuming on another number of ranks, run for real on gloo: DeepSpeed ZeRO-2 and FSDP2 reshard
model and optimizer state, the run continues at its step and LR with a recomputed gradient
accumulation, and the data position carries over so that no sample is read twice or skipped."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from test_trainer import ROOT, _clip, free_port, launch, wait
from tiny_run import write_config

from sam2_scale.config import load_config

RESHARDED = {"zero2": ("deepspeed", "zero2.json"), "zero3": ("deepspeed", "zero3.json"), "fsdp": ("fsdp", "")}


def _engine_worker(rank, world, port, folder, result_file, train):
    """Build each engine of RESHARDED on `world` ranks, one after the other in one process group;
    `train`: take two steps and save to `folder`/<name>, else load it (written on another world
    size). Rank 0 writes the consolidated states, by name."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ.update(MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    from sam2_scale.model import build_sam2
    from sam2_scale.train.distributed import init_distributed
    from sam2_scale.train.strategies import build_engine

    info = init_distributed()
    results = {}
    for name, (strategy, zero_config) in RESHARDED.items():
        cfg = load_config(
            None,
            [
                f"train.strategy={strategy}",
                "train.precision=fp32",
                *(["train.deepspeed_config=" + str(ROOT / "ds_configs" / zero_config)] if zero_config else []),
                f"train.ema_decay={0.0 if zero_config == 'zero3.json' else 0.5}",
                "optim.base_lr=1e-3",
                "optim.vision_lr=1e-3",
                "optim.warmup_steps=1",
            ],
        )
        torch.manual_seed(0)
        engine = build_engine(build_sam2("tiny", image_size=64).train(), cfg, info)
        if train:
            for step in range(2):
                engine.train_micro_batch(_clip(10 * rank + step), step, True)
                engine.step()
            engine.save(os.path.join(folder, name))
        else:
            engine.load(os.path.join(folder, name), resharded=True)
        state = engine.consolidated_state()
        ema = engine.full_state_dict(ema=True) if engine.ema is not None else {}
        torch.manual_seed(1)
        with torch.no_grad():  # the module's own (bf16 or partitioned) weights follow the masters
            loss = engine.training_step(_clip(99), 0)["core_loss"].item()
        if rank == 0:
            state["loss"] = loss
            state["lr"] = [g["lr"] for g in engine.optimizer.param_groups]
            state["ema"] = {k: v for k, v in ema.items() if k in state["weights"]}
            results[name] = state
        del engine
    if rank == 0:
        torch.save(results, result_file)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_engine_state_is_resharded_exactly(tmp_path):
    """ZeRO-2, ZeRO-3 and FSDP2 state written by 2 ranks, loaded by 3 and by 1: fp32 weights,
    AdamW moments and step, the LR schedule and the EMA, consolidated, are bitwise those that
    were saved, and the module computes the same loss. (The three engines share each set of rank
    processes: one start-up per world size.)"""
    os.environ.setdefault("TMPDIR", str(tmp_path))
    folder = tmp_path / "engine"

    def run(world, result_file, train):
        mp.spawn(_engine_worker, args=(world, free_port(), str(folder), str(result_file), train), nprocs=world, join=True)
        return torch.load(result_file)

    saved_by_name = run(2, tmp_path / "saved.pt", True)
    loaded_by_world = {world: run(world, tmp_path / f"loaded{world}.pt", False) for world in (3, 1)}
    for name in RESHARDED:
        saved = saved_by_name[name]
        assert saved["adam_step"] == 2 and len(saved["exp_avg"]) > 100, name
        for world, loaded_by_name in loaded_by_world.items():
            loaded = loaded_by_name[name]
            assert loaded["adam_step"] == saved["adam_step"] and loaded["lr"] == saved["lr"], (name, world)
            assert loaded["loss"] == pytest.approx(saved["loss"], rel=1e-5), (name, world)
            for part in ("weights", "exp_avg", "exp_avg_sq", "ema"):
                assert loaded[part].keys() == saved[part].keys(), (name, part)
                different = [k for k in saved[part] if not torch.equal(saved[part][k], loaded[part][k])]
                assert not different, f"{name}, {world} ranks: {part} differs in {len(different)} tensors, e.g. {different[:3]}"


def _run_config(tmp_path, shards, name, strategy, accum, **train):
    video_only = [{"name": "sav", "shards": str(shards / "sav/shard-*.tar"), "kind": "video", "batch_size": 1, "num_frames": 3}]
    return write_config(
        tmp_path / f"{name}.yaml",
        shards,
        tmp_path / name,
        optim={"total_steps": 4},
        checkpoint={"every": 2, "keep": 10},
        data={"datasets": video_only},
        # Mask prompts on frame 0 only and no drop-path: a clip's loss depends on the weights and
        # the sample alone (not on which rank draws the prompts), up to memory-attention dropout.
        prompts={"prob_to_use_pt_input": 0.0, "num_init_cond_frames": 1},
        model={"drop_path_rate": 0.0},
        train={
            "strategy": strategy,
            "grad_accum_steps": accum,
            **({"deepspeed_config": str(ROOT / "ds_configs/zero2.json")} if strategy == "deepspeed" else {}),
            "log_every": 1,
            **train,
        },
    )


def _train(tmp_path, config, world, name, args=()):
    codes, logs = wait(launch(config, tmp_path, world=world, args=args, log_name=name), tmp_path, name, timeout=600)
    assert codes == [0] * world, logs
    return logs


def _metrics(out_dir):
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "loss/core" in r}


def _final_ledger(out_dir):
    state = torch.load(out_dir / "checkpoints/step_00000004/trainer/rank_00000.pt", weights_only=True)
    return state["loader"]["datasets"]["sav"]["ledger"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_a_run_continues_on_another_number_of_ranks(strategy, training_shards, tmp_path):
    """2 ranks x 3 accumulation steps stop at step 2; the run goes on on 3 ranks (2 accumulation
    steps) and on 1 rank (6): same step, same LR, loss within noise, and the same samples as the
    uninterrupted run (1-sample shards: the ledger is a prefix of the epoch's draws)."""
    config = _run_config(tmp_path, training_shards, "ref", strategy, accum=3)
    _train(tmp_path, config, 2, "ref")
    reference = _metrics(tmp_path / "ref")
    consumed = _final_ledger(tmp_path / "ref")
    assert consumed == {"frontier": 4 * 3 * 2, "finished": [], "taken": {}, "sizes": {}}
    for world, accum in ((3, 2), (1, 6)):
        name = f"on{world}"
        config = _run_config(tmp_path, training_shards, name, strategy, accum=3)
        logs = _train(tmp_path, config, world, name, args=("--resume", str(tmp_path / "ref/checkpoints/step_00000002")))
        assert f"written by 2 rank(s), this run has {world}" in logs and f"gradient accumulation 3 -> {accum}" in logs
        resumed = _metrics(tmp_path / name)
        assert sorted(resumed) == [3, 4], "the run continues at the checkpoint's step"
        for step in (3, 4):
            for key in [k for k in reference[step] if k.startswith("lr/")]:
                assert resumed[step][key] == reference[step][key], f"{key} at step {step}"
            # The mean over all ranks of the same samples' losses, up to dropout noise.
            assert abs(resumed[step]["loss/core"] - reference[step]["loss/core"]) < 0.02 * reference[step]["loss/core"]
        assert _final_ledger(tmp_path / name) == consumed, "other samples than the uninterrupted run's"


@pytest.mark.slow
def test_one_rank_run_continues_on_two_and_a_batch_that_cannot_be_kept_is_refused(training_shards, tmp_path):
    config = _run_config(tmp_path, training_shards, "one", "fsdp", accum=2)
    _train(tmp_path, config, 1, "one")
    checkpoint = tmp_path / "one/checkpoints/step_00000002"
    config = _run_config(tmp_path, training_shards, "two", "fsdp", accum=2)
    logs = _train(tmp_path, config, 2, "two", args=("--resume", str(checkpoint)))
    assert "gradient accumulation 2 -> 1" in logs
    assert sorted(_metrics(tmp_path / "two")) == [3, 4]
    assert _final_ledger(tmp_path / "two") == _final_ledger(tmp_path / "one")
    # 1 rank x 2 micro-batches cannot be shared by 3 ranks: refused, unless the change is allowed.
    config = _run_config(tmp_path, training_shards, "three", "fsdp", accum=2)
    codes, logs = wait(launch(config, tmp_path, world=3, args=("--resume", str(checkpoint)), log_name="three"), tmp_path, "three")
    assert set(codes) == {1} and "train.allow_global_batch_change" in logs and "parameters) at" not in logs, logs
    config = _run_config(tmp_path, training_shards, "three", "fsdp", accum=1, allow_global_batch_change=True)
    logs = _train(tmp_path, config, 3, "three", args=("--resume", str(checkpoint)))
    assert "gradient accumulation 1 -> 1" in logs and sorted(_metrics(tmp_path / "three")) == [3, 4]
