"""The GPU benchmark's harness, in its CPU smoke form: Meta's reference training step and this
project's step measured side by side, and the end-to-end trainer row, so that a GPU run does
not fail for reasons a CPU can show."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_throughput import DEFAULT_PLAN, PHASES, plan_seconds  # noqa: E402


def toy_run(tmp_path, *args):
    out = tmp_path / "records.json"
    cmd = [sys.executable, "benchmarks/gpu_throughput.py", "--toy", "--json", str(out), *args]
    env = dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")  # TMPDIR: the e2e row's work folder
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_toy_run_of_the_default_plan_reports_every_row(tmp_path):
    """The default plan's rows at the toy setting, with a failing row among them: Meta's step and
    every row end as a result, the failing one with its error, and the rows after it still run;
    the trainer's end-to-end row reports too."""
    plan = [*DEFAULT_PLAN[:2], "large/eager/none/0", *DEFAULT_PLAN[2:]]
    records, stdout = toy_run(
        tmp_path, "--phases", "meta", "ours", "e2e", "--plan", *plan, "--time-limit", "800", "--row-time-limit", "400"
    )
    meta = [r for r in records if r["phase"] == "meta"]
    ours = {r["row"]: r for r in records if r["phase"] == "ours"}
    e2e = [r for r in records if r["phase"] == "e2e"]
    assert len(meta) == 1 and meta[0]["clips_per_s"] > 0, meta  # the sizes all stand for tiny
    assert list(ours) == plan, records
    failed = ours.pop("large/eager/none/0")
    assert "clips_per_s" not in failed and failed["error"], failed
    assert "tiny | ours | 0 | False | none | " + failed["error"][:20] in stdout
    assert all(r.get("clips_per_s", 0) > 0 and r["tflop_per_step"] > 0 for r in ours.values()), list(ours.values())
    # Two clips cost more FLOPs than one: the count follows the batch.
    assert ours["large/eager/hiera/2"]["tflop_per_step"] > 1.5 * ours["large/eager/none/1"]["tflop_per_step"]
    assert len(e2e) == 1 and e2e[0]["clips_per_s"] > 0 and 0 <= e2e[0]["data_wait_share"] < 1, e2e
    assert "× Meta" in stdout and "this project (ddp)" in stdout
    assert list(tmp_path.glob("e2e_*/run/metrics.jsonl")) and not list(tmp_path.glob("e2e_*/run/checkpoints/step_*")), (
        "a checkpoint"
    )


@pytest.mark.slow
def test_a_row_over_its_time_cap_is_reported_and_the_next_row_runs(tmp_path):
    """A compile row cannot trace its graphs in 3 s: the row says so, the eager row after it runs."""
    records, stdout = toy_run(
        tmp_path, "--phases", "ours", "--plan", "large/compile/none/1", "large/eager/none/1", "--row-time-limit", "3"
    )
    ours = [r for r in records if r["phase"] == "ours"]
    assert ours[0]["skipped"] == "time: over the row's 3 s cap", ours
    assert "time: over the row's 3 s cap" in stdout
    assert ours[1]["row"] == "large/eager/none/1" and ("clips_per_s" in ours[1] or "cap" in ours[1].get("skipped", "")), ours


def test_the_default_plan_fits_nine_minutes_on_an_h100():
    """Estimated from the measured H200 step times and the stated assumptions (gpu_throughput.py)."""
    assert plan_seconds(DEFAULT_PLAN, warmup=1, steps=5) <= PHASES["ours"] * 540
    assert sum(PHASES.values()) == pytest.approx(1.0)


def test_meta_reference_batch_is_built_on_the_step_device():
    """Every tensor of Meta's batch on the step's device (`meta` stands for the GPU): a CPU index
    stacked with device tensors stops the GPU run at its first row."""
    import torch
    from reference_step import reference_batch

    frames = torch.empty(3, 1, 3, 64, 64, device="meta")
    masks = torch.empty(3, 2, 64, 64, dtype=torch.bool, device="meta")
    batch = reference_batch(frames, masks, torch.zeros(3, 2, 2, dtype=torch.long, device="meta"))
    meta = batch.metadata
    tensors = [batch.img_batch, batch.masks, batch.obj_to_frame_idx, meta.unique_objects_identifier, meta.frame_orig_size]
    assert [t.device.type for t in tensors] == ["meta"] * 5
