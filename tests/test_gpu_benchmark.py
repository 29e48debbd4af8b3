"""The GPU benchmark's harness, in its CPU smoke form: Meta's reference training step and this
project's step measured side by side, and the end-to-end trainer row, so that a GPU run does
not fail for reasons a CPU can show."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_toy_run_measures_meta_and_this_step_and_the_trainer(tmp_path):
    out = tmp_path / "records.json"
    cmd = [sys.executable, "benchmarks/gpu_throughput.py", "--toy", "--phases", "meta", "ours", "e2e",
           "--plan", "tiny/eager/none/1", "tiny/eager/none/0", "tiny/eager/none/2",
           "--json", str(out), "--time-limit", "600"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads(out.read_text())
    meta = [r for r in records if r["phase"] == "meta"]
    ours = [r for r in records if r["phase"] == "ours"]
    e2e = [r for r in records if r["phase"] == "e2e"]
    assert len(meta) == 1 and meta[0]["clips_per_s"] > 0, meta
    assert [(r["clips"], r["ckpt"]) for r in ours] == [(1, "none"), (0, "none"), (2, "none")], ours
    # A row that fails (0 clips) reports its error, and the rows after it still run.
    failed = ours.pop(1)
    assert "clips_per_s" not in failed and failed["error"], failed
    assert "tiny | ours | 0 | False | none | " + failed["error"][:20] in proc.stdout
    assert all(r["clips_per_s"] > 0 and r["tflop_per_step"] > 0 for r in ours), ours
    # Two clips cost more FLOPs than one: the count follows the batch.
    assert ours[1]["tflop_per_step"] > 1.5 * ours[0]["tflop_per_step"]
    assert len(e2e) == 1 and e2e[0]["clips_per_s"] > 0 and 0 <= e2e[0]["data_wait_share"] < 1, e2e
    assert "× Meta" in proc.stdout and "this project (ddp)" in proc.stdout


def test_meta_reference_batch_is_built_on_the_step_device():
    """Every tensor of Meta's batch on the step's device (`meta` stands for the GPU): a CPU index
    stacked with device tensors stops the GPU run at its first row."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from reference_step import reference_batch

    frames = torch.empty(3, 1, 3, 64, 64, device="meta")
    masks = torch.empty(3, 2, 64, 64, dtype=torch.bool, device="meta")
    batch = reference_batch(frames, masks, torch.zeros(3, 2, 2, dtype=torch.long, device="meta"))
    meta = batch.metadata
    tensors = [batch.img_batch, batch.masks, batch.obj_to_frame_idx, meta.unique_objects_identifier, meta.frame_orig_size]
    assert [t.device.type for t in tensors] == ["meta"] * 5
