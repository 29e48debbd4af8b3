"""`make demo`, shortened: every stage runs for real (2 processes, DeepSpeed ZeRO-2, W&B offline, J&F, export)."""

import json

import pytest
import torch

from sam2_scale import demo
from sam2_scale.config import load_config
from sam2_scale.model import build_sam2, load_checkpoint

# Real training runs, clusters or the whole demo: the full tier only (`make test`).
pytestmark = pytest.mark.slow


def test_shortened_demo_runs_end_to_end(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--steps", "4", "eval.every=4"])  # J&F before and after only
    printed = capsys.readouterr().out
    assert "held-out J&F:" in printed and "training.png" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "train/metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval/clip_J&F" in r]
    assert (evaluations[0]["step"], evaluations[-1]["step"]) == (0, 4), "J&F of the untrained model first, the trained one last"
    assert (summary["jf_before"], summary["jf_after"]) == (evaluations[0]["eval/clip_J&F"], evaluations[-1]["eval/clip_J&F"])
    assert any("loss/core" in r for r in records)
    assert (tmp_path / "training.png").stat().st_size > 10_000
    assert list((tmp_path / "train/wandb").glob("offline-run-*/run-*.wandb"))
    image_size = load_config(demo.CONFIG).model.image_size
    load_checkpoint(build_sam2("tiny", image_size=image_size), tmp_path / "sam2.1_hiera_tiny_demo.pt")  # strict
    scores = json.loads((tmp_path / "eval_exported.json").read_text())
    assert abs(scores["J&F"] - summary["jf_after"]) < 1e-6, "standalone evaluation of the export matches the trainer's"
    assert torch.load(tmp_path / "sam2.1_hiera_tiny_demo.pt", weights_only=True)["model"]
