"""The synthetic SA-V / SA-1B / DAVIS dataset: formats, exact masks, occlusion, determinism."""

import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from sam2_scale.data.rle import encode as encode_rle
from sam2_scale.synthetic import (
    ANNOTATION_STRIDE,
    dataset_seed,
    make_scene,
    render_image,
    render_video,
    sav_annotation,
    write_mp4,
    write_synthetic_dataset,
)

# pycocotools' decode trips NumPy 2's __array__(copy=...) deprecation; harmless, and not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

REPO = Path(__file__).resolve().parent.parent
SIZE, FRAMES = (320, 240), 48  # the defaults
SAV_FIELDS = {
    "video_id": str,
    "video_duration": float,
    "video_frame_count": float,
    "video_height": float,
    "video_width": float,
    "video_resolution": float,
    "video_environment": str,
    "video_split": str,
    "masklet": list,
    "masklet_id": list,
    "masklet_size_rel": list,
    "masklet_size_abs": list,
    "masklet_size_bucket": list,
    "masklet_visibility_changes": list,
    "masklet_first_appeared_frame": list,
    "masklet_frame_count": list,
    "masklet_edited_frame_count": list,
    "masklet_type": list,
    "masklet_stability_score": list,
    "masklet_num": int,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def sav_videos(dataset):
    """Per SA-V video: (annotation record, decoded frames, rendered frames, analytic masks)."""
    out = []
    for index, (video, annotation) in enumerate(zip(dataset["sav_videos"], dataset["sav_annotations"])):
        with av.open(str(video)) as container:
            decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        frames, masks = render_video(FRAMES, SIZE, dataset_seed(0, "sav", index))
        out.append((json.loads(annotation.read_text()), decoded, frames, masks))
    return out


def decode_rle(rle):
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def default_scenes():
    return [make_scene(SIZE, FRAMES, dataset_seed(0, split, i)) for split in ("sav", "heldout") for i in range(2)]


def test_layout_and_counts(dataset):
    root = dataset["out_dir"]
    assert [p.relative_to(root).as_posix() for p in dataset["sav_videos"]] == [
        "sav/videos/sav_000001.mp4",
        "sav/videos/sav_000002.mp4",
    ]
    assert dataset["sav_annotations"][0].relative_to(root).as_posix() == "sav/annotations/sav_000001_manual.json"
    assert [p.name for p in dataset["sa1b_images"]] == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg", "sa_4.jpg"]
    assert dataset["sa1b_tar"] == root / "sa1b_tars" / "sa_000000.tar"
    assert dataset["heldout_videos"] == ["heldout_000", "heldout_001"]
    assert not list(root.rglob(".*.tmp")), "temporary files left behind"


def test_mp4_has_requested_frames_size_and_rate(dataset):
    for video in dataset["sav_videos"]:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.average_rate == 24
            frames = list(container.decode(video=0))
        assert len(frames) == FRAMES
        assert {(f.width, f.height, f.format.name) for f in frames} == {(*SIZE, "yuv420p")}


def test_sav_annotation_format(sav_videos):
    width, height = SIZE
    for index, (record, _, _, masks) in enumerate(sav_videos):
        assert set(record) == set(SAV_FIELDS)
        for field, kind in SAV_FIELDS.items():
            assert isinstance(record[field], kind), field
        num_objects = masks.shape[1]
        assert record["video_id"] == f"sav_{index + 1:06d}"
        assert record["video_duration"] == FRAMES / 24
        assert (record["video_frame_count"], record["video_height"], record["video_width"]) == (FRAMES, height, width)
        assert record["video_resolution"] == width * height
        assert (record["video_environment"], record["video_split"]) == ("Indoor", "train")
        assert len(record["masklet"]) == math.ceil(FRAMES / ANNOTATION_STRIDE)
        assert all(len(row) == num_objects for row in record["masklet"])
        assert record["masklet_num"] == num_objects
        assert record["masklet_id"] == list(range(num_objects))
        assert record["masklet_type"] == ["manual"] * num_objects
        assert record["masklet_stability_score"] == [None] * num_objects
        assert record["masklet_frame_count"] == [len(record["masklet"])] * num_objects
        for field in ("masklet_size_rel", "masklet_size_abs", "masklet_size_bucket", "masklet_visibility_changes"):
            assert len(record[field]) == num_objects, field
        assert all(isinstance(v, float) for v in record["masklet_first_appeared_frame"])
        for rel, size_abs, bucket in zip(record["masklet_size_rel"], record["masklet_size_abs"], record["masklet_size_bucket"]):
            assert rel == pytest.approx(size_abs / (width * height))
            assert bucket == ("small" if size_abs < 32**2 else "medium" if size_abs < 96**2 else "large")


def test_sav_rles_match_analytic_masks(sav_videos):
    for record, _, _, masks in sav_videos:
        for row, rles in enumerate(record["masklet"]):
            for k, rle in enumerate(rles):
                assert rle["size"] == [SIZE[1], SIZE[0]] and isinstance(rle["counts"], str)
                np.testing.assert_array_equal(decode_rle(rle), masks[row * ANNOTATION_STRIDE, k])


def test_sav_statistics_of_known_masklets():
    empty, small, large = np.zeros((100, 120), bool), np.zeros((100, 120), bool), np.ones((100, 120), bool)
    small[:10, :10] = True
    rows = [[encode_rle(m) for m in masks] for masks in [(empty, large), (small, large), (empty, large), (small, large)]]
    record = sav_annotation("sav_000009", rows, num_frames=14, height=100, width=120)
    assert record["masklet_first_appeared_frame"] == [1.0, 0.0]
    assert record["masklet_visibility_changes"] == [2, 0]
    assert record["masklet_size_abs"] == [100.0, 12000.0]
    assert record["masklet_size_bucket"] == ["small", "large"]
    assert record["masklet_edited_frame_count"] == [2, 4]
    assert record["video_duration"] == pytest.approx(14 / 24)


def test_decoded_pixels_match_rendered_objects(sav_videos):
    for _, decoded, frames, masks in sav_videos:
        assert decoded.shape == frames.shape
        error = np.abs(decoded.astype(np.int16) - frames.astype(np.int16))
        for k in range(masks.shape[1]):
            assert error[masks[:, k]].mean() < 10, f"object {k}: decoded pixels differ from the rendered ones"


def test_masks_are_disjoint_with_occlusion_and_frame_exits():
    occluded = clipped = False
    for scene in default_scenes():
        for t in range(FRAMES):
            _, visible = scene.render(t)
            silhouettes = scene.silhouettes(t)
            assert visible.sum(axis=0).max() <= 1, "objects overlap"
            assert not (visible & ~silhouettes).any()
            occluded |= bool((silhouettes & ~visible).any())
            for shape, silhouette in zip(scene.shapes, silhouettes):
                a, b = shape.semi_axes
                full_area = 4 * a * b if shape.kind == "rect" else math.pi * a * b
                clipped |= bool(silhouette.sum() < 0.9 * full_area)
    assert occluded, "no object is ever hidden behind another"
    assert clipped, "no object ever leaves the frame partly"


def test_scene_rendering_is_deterministic_and_seeded():
    frames, masks = render_video(6, (64, 48), seed=3)
    again_frames, again_masks = render_video(6, (64, 48), seed=3)
    other_frames, _ = render_video(6, (64, 48), seed=4)
    assert frames.dtype == np.uint8 and frames.shape == (6, 48, 64, 3)
    assert masks.dtype == bool and masks.shape[:1] == (6,) and masks.shape[2:] == (48, 64)
    np.testing.assert_array_equal(frames, again_frames)
    np.testing.assert_array_equal(masks, again_masks)
    assert not np.array_equal(frames, other_frames)
    assert frames[0].std() > 10, "background should be textured"


def test_sa1b_json_and_pixels(dataset):
    width, height = SIZE
    for index, (image_path, json_path) in enumerate(zip(dataset["sa1b_images"], dataset["sa1b_annotations"])):
        record = json.loads(json_path.read_text())
        assert record["image"] == {"image_id": index + 1, "width": width, "height": height, "file_name": image_path.name}
        annotations = record["annotations"]
        assert 2 <= len(annotations) <= 6
        _, masks = render_image(SIZE, np.random.default_rng(dataset_seed(0, "sa1b", index)))
        assert len(masks) == len(annotations)
        for annotation, expected in zip(annotations, masks):
            assert set(annotation) == {
                "id",
                "segmentation",
                "bbox",
                "area",
                "predicted_iou",
                "stability_score",
                "crop_box",
                "point_coords",
            }
            mask = decode_rle(annotation["segmentation"])
            np.testing.assert_array_equal(mask, expected)
            assert isinstance(annotation["area"], int) and annotation["area"] == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            assert all(isinstance(v, float) for v in annotation["bbox"])
            assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert annotation["crop_box"] == [0, 0, width, height]
            (x, y), *rest = annotation["point_coords"]
            assert not rest and mask[int(y), int(x)]
            assert 0 < annotation["predicted_iou"] <= 1 and 0 < annotation["stability_score"] <= 1
        with Image.open(image_path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", SIZE)
    ids = [a["id"] for p in dataset["sa1b_annotations"] for a in json.loads(p.read_text())["annotations"]]
    assert len(set(ids)) == len(ids)


def test_sa1b_tar_holds_the_loose_files(dataset):
    loose = sorted(dataset["sa1b_images"] + dataset["sa1b_annotations"])
    with tarfile.open(dataset["sa1b_tar"], "r:") as tar:  # "r:" fails on compressed archives
        members = tar.getmembers()
        assert sorted(m.name for m in members) == [p.name for p in loose]
        assert all(m.isfile() for m in members)
        contents = {m.name: tar.extractfile(m).read() for m in members}
    for path in loose:
        assert contents[path.name] == path.read_bytes()


def test_davis_palette_pngs_reproduce_masks(dataset):
    root = dataset["davis_dir"]
    for index, name in enumerate(dataset["heldout_videos"]):
        frames, masks = render_video(FRAMES, SIZE, dataset_seed(0, "heldout", index))
        jpegs = sorted((root / "JPEGImages" / name).iterdir())
        pngs = sorted((root / "Annotations" / name).iterdir())
        assert [p.name for p in jpegs] == [f"{t:05d}.jpg" for t in range(FRAMES)]
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(FRAMES)]
        for t in range(FRAMES):
            with Image.open(pngs[t]) as png:
                assert png.mode == "P"
                assert png.getpalette()[:3] == [0, 0, 0]
                labels = np.asarray(png)
            expected = np.zeros(masks.shape[2:], np.uint8)
            for k in range(masks.shape[1]):
                expected[masks[t, k]] = k + 1
            np.testing.assert_array_equal(labels, expected)
        with Image.open(jpegs[0]) as jpeg:
            assert jpeg.size == SIZE
            assert np.abs(np.asarray(jpeg, np.int16) - frames[0]).mean() < 10


def test_per_object_pngs_reproduce_masks(dataset):
    root = dataset["davis_per_object_dir"]
    annotated = range(0, FRAMES, ANNOTATION_STRIDE)
    for index, name in enumerate(dataset["heldout_videos"]):
        _, masks = render_video(FRAMES, SIZE, dataset_seed(0, "heldout", index))
        object_dirs = sorted((root / "Annotations" / name).iterdir())
        assert [d.name for d in object_dirs] == [f"{k:03d}" for k in range(masks.shape[1])]
        for k, folder in enumerate(object_dirs):
            assert [p.name for p in sorted(folder.iterdir())] == [f"{t:05d}.png" for t in annotated]
            for t in annotated:
                with Image.open(folder / f"{t:05d}.png") as png:
                    values = np.asarray(png)
                assert set(np.unique(values)) <= {0, 255}
                np.testing.assert_array_equal(values == 255, masks[t, k])
        assert len(list((root / "JPEGImages" / name).glob("*.jpg"))) == FRAMES


def test_dataset_is_deterministic(tmp_path):
    small = dict(num_videos=1, num_images=1, num_heldout=1, num_frames=5, size=(64, 48))
    first = write_synthetic_dataset(tmp_path / "a", seed=7, **small)
    second = write_synthetic_dataset(tmp_path / "b", seed=7, **small)
    other = write_synthetic_dataset(tmp_path / "c", seed=8, **small)
    for key in ("sav_annotations", "sa1b_annotations"):
        assert first[key][0].read_bytes() == second[key][0].read_bytes()
        assert first[key][0].read_bytes() != other[key][0].read_bytes()
    assert first["sa1b_tar"].read_bytes() == second["sa1b_tar"].read_bytes()
    rerun = write_synthetic_dataset(tmp_path / "a", seed=7, **{**small, "num_frames": 2})
    assert len(list((rerun["davis_dir"] / "JPEGImages" / "heldout_000").iterdir())) == 2, "stale frames left behind"


def test_write_mp4_streams_frames_and_checks_sizes(tmp_path):
    frames = (np.full((32, 48, 3), 10 * t, np.uint8) for t in range(7))
    assert write_mp4(tmp_path / "clip.mp4", frames, fps=12) == 7
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert container.streams.video[0].average_rate == 12
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # Flat grey survives H.264 up to the rounding of the limited-range YUV round trip.
    np.testing.assert_allclose([f.mean() for f in decoded], [10 * t for t in range(7)], atol=2)
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", [np.zeros((31, 48, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least one frame"):
        write_mp4(tmp_path / "empty.mp4", [])
    assert not (tmp_path / "odd.mp4").exists()


def test_cli_runs_as_a_script(tmp_path):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--videos", "1", "--images", "1", "--heldout", "1", "--frames", "6", "--size", "64x48"]
    result = subprocess.run(
        [sys.executable, "data_prep/make_synthetic.py", *args], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "1 video x 6 frames" in result.stdout
    record = json.loads((out / "sav" / "annotations" / "sav_000001_manual.json").read_text())
    assert len(record["masklet"]) == 2 and record["video_width"] == 64.0
    assert (out / "sa1b_tars" / "sa_000000.tar").is_file()
    assert len(list((out / "davis_per_object" / "JPEGImages" / "heldout_000").glob("*.jpg"))) == 6


def test_easy_style_is_one_big_slow_shape_per_video():
    from sam2_scale.synthetic import EASY, HARD

    def mean_speed(scene):
        return np.mean([np.hypot(*shape.velocity) for shape in scene.shapes])

    easy = [make_scene(SIZE, FRAMES, dataset_seed(0, "sav", i), style=EASY) for i in range(12)]
    hard = [make_scene(SIZE, FRAMES, dataset_seed(0, "sav", i), style=HARD) for i in range(12)]
    assert all(scene.num_objects == 1 for scene in easy)
    assert {scene.num_objects for scene in hard} == {1, 2, 3}
    short_side = min(SIZE)
    assert min(scene.shapes[0].semi_axes[0] for scene in easy) >= EASY.semi_axis_range[0] * short_side
    assert max(s.semi_axes[0] for scene in hard for s in scene.shapes) <= HARD.semi_axis_range[1] * short_side
    assert np.mean([mean_speed(s) for s in easy]) < 0.5 * np.mean([mean_speed(s) for s in hard])
    image, masks = render_image(SIZE, 3, style=EASY)
    assert len(masks) >= 2 and masks.reshape(len(masks), -1).any(axis=1).all(), "images keep several shapes"


def test_make_synthetic_cli_style(tmp_path):
    out = tmp_path / "easy"
    args = ["--out", str(out), "--videos", "2", "--images", "1", "--heldout", "1", "--frames", "8", "--size", "64x48"]
    result = subprocess.run(
        [sys.executable, str(REPO / "data_prep/make_synthetic.py"), *args, "--style", "easy"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "easy" in result.stdout and "2 masklets" in result.stdout  # one object per video
    bad = subprocess.run(
        [sys.executable, str(REPO / "data_prep/make_synthetic.py"), *args, "--style", "medium"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'medium'" in bad.stderr
