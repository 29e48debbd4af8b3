import torch

from sam2_scale import demo
from sam2_scale.model import build_sam2, load_checkpoint


def test_demo_runs_end_to_end(tmp_path, capsys):
    demo.main(["--frames", "3", "--image-size", "128", "--objects", "2", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "38,962,498 parameters" in printed
    assert "same predictions: True" in printed
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    load_checkpoint(build_sam2("tiny", image_size=128), ckpt)  # strict: raises on any mismatch


def test_synthetic_video_masks_match_painted_pixels():
    frames, masks = demo.synthetic_video(4, 64, 2)
    assert frames.shape == (4, 3, 64, 64) and masks.shape == (4, 2, 1, 64, 64)
    assert masks.flatten(2).any(-1).all(), "every object is visible on every frame"
    # Pixels of the last-painted object carry exactly its colour.
    last = masks[:, 1, 0]
    colors = frames.permute(0, 2, 3, 1)[last]
    assert torch.allclose(colors, colors[:1].expand_as(colors))
