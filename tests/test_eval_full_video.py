"""`python -m sam2_scale.eval` on whole videos: a DAVIS-style folder and the shards made from it
give the same scores; the written PNGs, scored by the benchmark rules, give them too; the SA-V
per-object layout; several ranks give the numbers of one; unreadable videos are skipped and
counted."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from reference import randomize_
from test_eval_protocol import reference_scores

from sam2_scale.eval.__main__ import main
from sam2_scale.eval.videos import BadVideo, folder_videos
from sam2_scale.model import build_sam2, save_checkpoint
from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.synthetic import write_synthetic_dataset
from sam2_scale.train.distributed import free_port

MODEL = ["--size", "tiny", "--image-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("full_video")
    write_synthetic_dataset(root / "raw", num_videos=0, num_images=0, num_heldout=2, num_frames=10, size=(96, 72), seed=1)
    davis = root / "raw/davis"
    plans = plan_shards(find_davis_items(davis / "JPEGImages", davis / "Annotations"), 1)
    run_shards(plans, root / "shards", DavisSource(), workers=1, progress=False)
    write_manifest(root / "shards", plans, "davis", {})
    torch.manual_seed(0)
    save_checkpoint(randomize_(build_sam2("tiny", image_size=64), seed=4), root / "tiny.pt")  # predicts some pixels
    return root


def run_eval(data, out, *args):
    main([str(data / "tiny.pt"), *MODEL, "--json", str(out), *args])
    return json.loads(out.read_text())


def read_labels(folder):
    return [np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))]


@pytest.mark.slow
def test_folder_and_shards_score_the_same_and_the_written_pngs_agree(data, tmp_path):
    pred_dir = tmp_path / "pred"
    folder = run_eval(data, tmp_path / "f.json", "--data", str(data / "raw/davis"), "--protocol", "davis",
                      "--write-masks", str(pred_dir), "--csv", str(tmp_path / "f.csv"))  # fmt: skip
    shards = run_eval(data, tmp_path / "s.json", "--shards", str(data / "shards/shard-*.tar"), "--protocol", "davis")
    assert folder["num_videos"] == 2 and folder["num_objects"] >= 2 and not folder["skipped"]
    assert folder["objects"] == shards["objects"]
    assert 0 < folder["J&F"] < 100 and folder["J&F"] == pytest.approx((folder["J"] + folder["F"]) / 2)
    assert set(folder["per_video"]) == {"heldout_000", "heldout_001"} and folder["frames_per_s"] > 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    overall = ",".join(f"{folder[k]:.3f}" for k in ("J&F", "J", "F"))
    assert len(lines) == 2 + folder["num_objects"] and lines[1] == f"Global score,,{overall}"

    # Any scorer reading the PNGs finds the same numbers: the benchmark rules, written out.
    for name in ("heldout_000", "heldout_001"):
        gt = read_labels(data / "raw/davis/Annotations" / name)
        pred = read_labels(pred_dir / name)
        assert len(pred) == len(gt) == 10 and pred[0].shape == gt[0].shape == (72, 96)
        expected = reference_scores(gt, pred, skip_last=True)
        got = {r["object_id"]: (r["J"], r["F"]) for r in folder["objects"] if r["video"] == name}
        assert got.keys() == expected.keys()
        for obj in expected:
            assert got[obj] == pytest.approx(expected[obj], rel=1e-6)  # J and F per frame in float32


@pytest.mark.slow
def test_sav_layout_writes_one_png_per_object_and_matches_the_palette_folder(data, tmp_path):
    per_object = run_eval(data, tmp_path / "p.json", "--data", str(data / "raw/davis_per_object"), "--protocol", "sav",
                          "--write-masks", str(tmp_path / "pred"))  # fmt: skip
    palette = run_eval(data, tmp_path / "q.json", "--data", str(data / "raw/davis"), "--protocol", "sav", "--max-videos", "1")
    assert per_object["num_videos"] == 2 and palette["num_videos"] == 1
    # The same objects, numbered from 0 in the per-object layout as SA-V does; scored on every
    # 4th frame there (SA-V's 6 of 24 fps), so not to the same numbers.
    ids = [r["object_id"] for r in per_object["objects"] if r["video"] == "heldout_000"]
    assert [i + 1 for i in ids] == [r["object_id"] for r in palette["objects"]]
    obj = ids[0]
    written = sorted((tmp_path / "pred/heldout_000" / f"{obj:03d}").glob("*.png"))
    assert len(written) == 10 and set(np.unique(np.array(Image.open(written[5])))) <= {0, 1}  # every frame written


@pytest.mark.slow
def test_two_ranks_give_the_numbers_of_one(data, tmp_path):
    args = [str(data / "tiny.pt"), *MODEL, "--data", str(data / "raw/davis"), "--protocol", "davis"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank below: the thread count changes CPU rounding
    try:
        single = run_eval(data, tmp_path / "one.json", *args[1:])
    finally:
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "sam2_scale.eval", *args, "--json", str(tmp_path / "two.json")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["objects"] == single["objects"] and two["J&F"] == single["J&F"] and two["num_videos"] == 2


@pytest.mark.slow
def test_unreadable_videos_are_skipped_and_counted_and_bad_paths_named(data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data / "raw/davis", root)
    (root / "JPEGImages/heldout_001/00004.jpg").write_bytes(b"not a jpeg")
    scores = run_eval(data, tmp_path / "b.json", "--data", str(root), "--protocol", "davis")
    assert scores["num_videos"] == 1 and len(scores["skipped"]) == 1 and "00004.jpg" in scores["skipped"][0]
    assert {r["video"] for r in scores["objects"]} == {"heldout_000"}

    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "Annotations/heldout_000/00002.png")
    with pytest.raises(BadVideo, match="00002.png: mask is 5x5, the video's frames are 96x72"):
        folder_videos(root)
    with pytest.raises(FileNotFoundError, match="no frames folder"):
        folder_videos(tmp_path / "nothing")


def test_a_checkpoint_that_is_missing_or_unreadable_is_one_line_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "typo.pt"), "--data", str(tmp_path)])
    assert exit_.value.code == 2 and f"checkpoint {tmp_path / 'typo.pt'}: no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=f"cannot read checkpoint {tmp_path / 'junk.pt'}"):
        main([str(tmp_path / "junk.pt"), "--data", str(tmp_path), "--size", "tiny", "--image-size", "64"])
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="no complete checkpoint"):
        main([str(tmp_path / "run"), "--data", str(tmp_path)])
