import json

from sam2_scale import demo


def test_shortened_demo_runs_end_to_end(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--steps", "3", "--resolution", "64", "--workers", "2"])
    printed = capsys.readouterr().out
    assert "verified" in printed and "held-out J&F before" in printed and "reloaded strictly: identical" in printed
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 3 and all(h["core_loss"] >= 0 for h in history)
    assert (tmp_path / "sam2.1_hiera_tiny.pt").exists()
