"""Regional torch.compile: no graph break inside a region, and no recompilation once the first
steps have met every kind of call, while object count and memory-bank size keep changing.

Dynamo decides graphs, guards and breaks; the `aot_eager` backend traces the same graphs
(through AOT autograd, backward included) without generating kernels, which keeps this test
to CPU minutes. Kernels themselves are the GPU benchmark's business.
"""

import gc
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import latest_step, launch, wait, wait_for
from tiny_run import ROOT, write_config
from torch._dynamo.utils import counters
from tracking_driver import synthetic_clip

from sam2_scale.config import load_config
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2
from sam2_scale.model.layers import DropPath
from sam2_scale.objective.prompts import micro_batch_seeds, sample_scenario
from sam2_scale.train.engine import TrainingStep


def video_batch(num_frames, num_objects, seed, size=64):
    frames, masks = synthetic_clip(num_frames, num_objects, size, seed=seed)
    return Batch.from_clip(frames, masks[:, :, 0])


def images_batch(objects_per_image, seed, size=64):
    clips = [synthetic_clip(1, n, size, seed=seed + i) for i, n in enumerate(objects_per_image)]
    frames = torch.stack([f for f, _ in clips], dim=1)
    masks = torch.cat([m[:, :, 0] for _, m in clips], dim=1)
    clip_of_object = torch.repeat_interleave(torch.arange(len(clips)), torch.tensor(objects_per_image))
    idx = torch.stack([torch.zeros_like(clip_of_object), clip_of_object], dim=-1)[None]
    return Batch(frames, masks, idx, list(objects_per_image))


def micro_batches_with(cfg, num_frames, want, count=1):
    """Indices of micro-batches whose scenario satisfies `want`."""
    found = []
    for k in range(10_000):
        scenario = sample_scenario(num_frames, cfg.prompts, np.random.default_rng(micro_batch_seeds(cfg.train.seed, k, 0)[0]))
        if want(scenario):
            found.append(k)
            if len(found) == count:
                return found
    raise AssertionError("no such scenario")


@pytest.fixture
def collection_off():
    """Tracing allocates millions of Python objects, and automatic garbage collection would take a
    tenth of its time: off for the test, as the trainer has it (train.gc_every)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.mark.slow
def test_regions_compile_once_without_breaks_and_give_the_eager_outputs(collection_off):
    """One traced model serves both checks (tracing is nearly all of this test's time).

    1. No graph break in any region, and no recompile once the warm-up calls have met every kind
       of call, while object count, clip length and memory-bank size keep changing.
    2. Compiled = eager on one batch. aot_eager runs the traced graphs op by op: the loss equals
       eager's; gradients equal it up to the rounding of AOT autograd's decomposed backward. A
       random model sits at its decision thresholds (object present or not, which candidate mask,
       where a click lands), where 1e-7 of input noise already moves some gradients by 10 %, so
       they are compared as one vector.
    """
    cfg = load_config(
        None,
        [
            "model.image_size=64",
            "data.resolution=64",
            "train.compile=true",
            "train.compile_backend=aot_eager",
            "train.precision=fp32",
            "prompts.num_correction_pt_per_frame=3",
            "prompts.num_frames_to_correct=3",
        ],
    )
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=64, drop_path_rate=0.1).train()
    torch._dynamo.reset()
    counters.clear()
    step = TrainingStep(model, cfg, rank=0)

    def run(batch, k):
        step(batch, k)["core_loss"].backward()

    # Warm-up: every kind of call once, for one object and for several (sizes 1 are special).
    kinds = {
        "click": lambda s: s.prompt_kind.get(0) == "click" and len(s.frames_to_correct) > len(s.init_cond_frames),
        "box": lambda s: s.prompt_kind.get(0) == "box" and len(s.frames_to_correct) > len(s.init_cond_frames),
        "mask": lambda s: not s.use_pt_input and len(s.init_cond_frames) == 1,
    }
    for objects in (1, 2):
        for want in kinds.values():
            (k,) = micro_batches_with(cfg, 4, want)
            run(video_batch(4, objects, seed=k), k)
        for kind in ("click", "box"):
            (k,) = micro_batches_with(cfg, 1, lambda s, kind=kind: s.prompt_kind[0] == kind)
            run(images_batch([objects], seed=k), k)
    graphs_after_warmup = counters["stats"]["unique_graphs"]
    assert graphs_after_warmup > 0, "the regions must have compiled"

    # 20 steps: random scenarios, 1-3 objects per clip, clips of 3-6 frames (memory banks of
    # 1-6 frames), 1-3 images per batch.
    rng = np.random.default_rng(0)
    for k in range(100, 120):
        if k % 4 == 3:
            run(images_batch(list(rng.integers(1, 4, size=rng.integers(1, 4))), seed=k), k)
        else:
            run(video_batch(int(rng.integers(3, 7)), int(rng.integers(1, 4)), seed=k), k)

    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup, "a region recompiled after the warm-up"

    # Compiled against eager (the same module under the "force_eager" stance), with the random
    # draws taken out: drop path keeps every sample (its compiled and eager draws come from two
    # different kernels, so they differ by design) and memory attention runs without dropout.
    for module in model.modules():
        if isinstance(module, DropPath):
            module.drop_prob = 0.0
            module.keep_prob.fill_(1.0)  # a tensor input of the graphs: no recompile
    model.memory_attention.eval()
    (k,) = micro_batches_with(cfg, 3, lambda s: s.use_pt_input and len(s.frames_to_correct) == 2)
    batch = video_batch(3, 2, seed=0)
    results = []
    for stance in ("force_eager", "default"):
        model.zero_grad(set_to_none=True)
        with torch.compiler.set_stance(stance):
            losses = step(batch, k)
            losses["core_loss"].backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((losses, grads))
    (eager_losses, eager), (compiled_losses, compiled) = results
    for key, value in eager_losses.items():
        torch.testing.assert_close(compiled_losses[key], value, msg=key)
    assert (compiled - eager).norm() <= 1e-3 * eager.norm()


# Every strategy under compile, in the real trainer (tests/compile_matrix.py runs them all in one
# set of 2 rank processes, so the regions are traced once): (run, strategy, ZeRO config,
# checkpointed regions, gradient accumulation). Each strategy runs compiled with checkpointing on at
# least once; none, hiera and hiera+memory attention all appear, and accumulation in most.
MATRIX = [
    ("ddp", "ddp", "", [], 2),
    ("ddp_ckpt", "ddp", "", ["hiera", "memory_attention"], 1),
    ("zero1", "deepspeed", "zero1.json", ["hiera"], 2),
    ("zero2", "deepspeed", "zero2.json", ["hiera", "memory_attention"], 1),
    ("zero3", "deepspeed", "zero3.json", ["hiera"], 2),
    ("fsdp", "fsdp", "", ["hiera", "memory_attention"], 2),
]


def start_runs(runs, config, tmp_path, world=2):
    """Start `world` rank processes that run `runs` in order through the trainer's `train()`
    (tests/compile_matrix.py), in one process group."""
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"config": str(config), "runs": runs}))
    return launch(
        None, tmp_path, world, log_name="runs", command=[sys.executable, str(ROOT / "tests/compile_matrix.py"), str(cases)]
    )


def finished_runs(procs, tmp_path, timeout=1800):
    """Wait for the processes; their exit codes, the exit code of each run they finished (by
    name), and their logs."""
    codes, logs = wait(procs, tmp_path, "runs", timeout=timeout)
    done = tmp_path / "cases.json.codes"
    return codes, dict(line.split() for line in done.read_text().splitlines()) if done.is_file() else {}, logs


def run_all(runs, config, tmp_path, world=2, timeout=1800):
    codes, done, logs = finished_runs(start_runs(runs, config, tmp_path, world), tmp_path, timeout)
    assert codes == [0] * world and done == {run["name"]: "0" for run in runs}, logs


TOLERANCE = 1e-4  # relative; compiled runs are within 2e-5 of eager (the decomposed backward's rounding)


def logged_steps(out_dir):
    path = Path(out_dir) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return {r["step"]: r for r in records if "loss/core" in r}


@pytest.mark.slow
def test_every_strategy_trains_compiled_as_it_trains_eager_and_resumes(training_shards, tmp_path):
    """1. Compiled = eager under ddp, ZeRO-1/2/3 and fsdp, with and without checkpointed regions
    and accumulation, drop path and dropout off (their random draws differ under compile by
    design, see README): the losses and the gradient norm of every top-level module, at every
    step, within float tolerance. Counted by the trainer itself (dynamo's counters, in
    metrics.jsonl): no graph break, and no recompile after the warm-up.
    2. A compiled run resumed from its checkpoint continues bitwise.
    3. A compiled ZeRO-2 run killed (SIGKILL) after its step-2 checkpoint continues on 1 rank with
    twice the accumulation: same step and LR, and the loss the killed run logged for the same
    samples (video clips with mask prompts: a clip's loss depends on the weights and the sample
    alone, not on the rank that draws its prompts).
    The runs share one set of rank processes, so that the regions are traced once."""
    config = write_config(
        tmp_path / "base.yaml",
        training_shards,
        tmp_path / "unused",
        optim={"total_steps": 3},
        model={"drop_path_rate": 0.0, "memory_attention_dropout": 0.0},
        train={"compile_backend": "aot_eager"},
        checkpoint={"every": 0, "at_end": False},
    )
    runs = []
    for compiled in ("false", "true"):
        for name, strategy, zero, regions, accum in MATRIX:
            overrides = [
                f"train.strategy={strategy}",
                f"model.activation_checkpointing=[{','.join(regions)}]",
                f"train.grad_accum_steps={accum}",
                f"train.compile={compiled}",
                *([f"train.deepspeed_config={ROOT / 'ds_configs' / zero}"] if zero else []),
            ]
            runs.append({"name": str(tmp_path / f"{name}_{compiled}"), "overrides": overrides})
    resumable = ["train.strategy=fsdp", "model.activation_checkpointing=[hiera]", "train.compile=true"]
    resumable += ["optim.total_steps=4", "checkpoint.every=2"]
    runs.append({"name": str(tmp_path / "uninterrupted"), "overrides": resumable})
    checkpoint = str(tmp_path / "uninterrupted/checkpoints/step_00000002")
    runs.append({"name": str(tmp_path / "resumed"), "overrides": resumable, "resume": checkpoint})
    video_only = f"[{{name: sav, shards: '{training_shards / 'sav/shard-*.tar'}', kind: video, num_frames: 3}}]"
    killed = tmp_path / "killed"
    elastic = ["train.strategy=deepspeed", "train.compile=true", "train.grad_accum_steps=2", "optim.total_steps=4"]
    elastic += ["checkpoint.every=2", f"data.datasets={video_only}", "prompts.prob_to_use_pt_input=0"]
    elastic += ["prompts.num_init_cond_frames=1"]
    runs.append({"name": str(killed), "overrides": elastic})

    procs = start_runs(runs, config, tmp_path)
    wait_for(lambda: 3 in logged_steps(killed), procs, timeout=1800)
    os.killpg(procs[0].pid, signal.SIGKILL)
    codes, done, logs = finished_runs(procs, tmp_path)
    assert codes == [-signal.SIGKILL] * 2 and latest_step(killed) == 2, f"the kill did not land mid-run ({codes})\n{logs}"
    assert done == {run["name"]: "0" for run in runs[:-1]}, logs

    for name, *_ in MATRIX:
        eager, compiled = logged_steps(tmp_path / f"{name}_false"), logged_steps(tmp_path / f"{name}_true")
        assert sorted(eager) == sorted(compiled) == [1, 2, 3], name
        for step in (1, 2, 3):
            compared = [k for k in eager[step] if k.startswith(("loss/", "grad_norm/"))]
            assert "grad_norm/image_encoder" in compared and "loss/mask" in compared
            for key in compared:
                assert compiled[step][key] == pytest.approx(eager[step][key], rel=TOLERANCE), f"{name}, step {step}: {key}"
            assert compiled[step]["compile/graph_breaks"] == 0, f"{name}, step {step}"
    # The first compiled run is the warm-up. After it, no run compiles a graph after its first
    # step, and those that wrap the modules alike reuse the warm-up's graphs. FSDP2 (it swaps each
    # sharded module's class) and ZeRO-3 (leaf blocks) trace their own in their first step.
    warmed_up = logged_steps(tmp_path / f"{MATRIX[0][0]}_true")[3]["compile/graphs"]
    for name, strategy, zero, *_ in MATRIX[1:]:
        graphs = [step["compile/graphs"] for step in logged_steps(tmp_path / f"{name}_true").values()]
        assert graphs == [graphs[0]] * 3, f"{name} compiled graphs after its first step: {graphs}"
        if strategy == "ddp" or zero in ("zero1.json", "zero2.json"):
            assert graphs[0] == warmed_up, f"{name} did not reuse the warm-up's graphs: {graphs} after {warmed_up}"

    uninterrupted, resumed = logged_steps(tmp_path / "uninterrupted"), logged_steps(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        for key in [k for k in uninterrupted[step] if k.startswith(("loss/", "grad_norm/", "lr/"))]:
            assert resumed[step][key] == uninterrupted[step][key], f"resumed, step {step}: {key}"

    before = logged_steps(killed)
    (tmp_path / "cases.json.codes").unlink()
    run_all([{"name": str(killed), "overrides": elastic, "resume": "auto"}], config, tmp_path, world=1)
    logs = (tmp_path / "runs.rank0.log").read_text()
    assert "written by 2 rank(s), this run has 1" in logs and "gradient accumulation 2 -> 4" in logs, logs[-3000:]
    lines = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    after = {r["step"]: r for r in lines[len(before) :] if "loss/core" in r}
    assert sorted(after) == [3, 4]
    assert after[3]["lr/base"] == before[3]["lr/base"]
    assert after[3]["loss/core"] == pytest.approx(before[3]["loss/core"], rel=1e-3)
    assert after[4]["compile/graph_breaks"] == 0


@pytest.mark.slow
@pytest.mark.inductor
def test_inductor_generates_the_kernels_of_every_strategy(training_shards, tmp_path):
    """Real code generation on the CPU: ddp, ZeRO-1/2/3 and fsdp train compiled with inductor (one
    rank; ddp and ZeRO-1/2 share one compile, fsdp and ZeRO-3 make their own) and give eager's
    losses up to the rounding of fused kernels, with no graph break. Video clips with mask prompts
    keep the graphs few."""
    video_only = [{"name": "sav", "shards": str(training_shards / "sav/shard-*.tar"), "kind": "video", "num_frames": 3}]
    config = write_config(
        tmp_path / "base.yaml",
        training_shards,
        tmp_path / "unused",
        optim={"total_steps": 2},
        data={"datasets": video_only},
        prompts={"prob_to_use_pt_input": 0.0, "num_init_cond_frames": 1},
        model={"drop_path_rate": 0.0, "memory_attention_dropout": 0.0},
        train={"compile_backend": "inductor", "grad_accum_steps": 2},
        checkpoint={"every": 0, "at_end": False},
    )
    strategies = {
        "ddp": [],
        "fsdp": [],
        **{z: [f"train.deepspeed_config={ROOT / 'ds_configs' / z}.json"] for z in ("zero1", "zero2", "zero3")},
    }
    runs = []
    for name, extra in strategies.items():
        strategy = "deepspeed" if name.startswith("zero") else name
        for compiled in ("false", "true"):
            overrides = [
                f"train.strategy={strategy}",
                f"train.compile={compiled}",
                "model.activation_checkpointing=[hiera]",
                *extra,
            ]
            runs.append({"name": str(tmp_path / f"{name}_{compiled}"), "overrides": overrides})
    run_all(runs, config, tmp_path, world=1, timeout=3600)
    for name in strategies:
        eager, compiled = logged_steps(tmp_path / f"{name}_false"), logged_steps(tmp_path / f"{name}_true")
        for step in (1, 2):
            assert compiled[step]["loss/core"] == pytest.approx(eager[step]["loss/core"], rel=1e-3), f"{name}, step {step}"
            assert compiled[step]["compile/graph_breaks"] == 0 and compiled[step]["compile/graphs"] > 0, name
