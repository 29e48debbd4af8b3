"""Input pipeline: 8-frame training clips per second for one worker, and host memory over a long stream.

Throughput: 8-frame clips at 1024x1024 with up to 3 object masks and the full augmentation, in one
process with one intra-op thread (what one DataLoader worker does), three ways on the same source
frames (synthetic SA-V videos, 1280x720, every 4th frame annotated):

  (a) ours       `clip_pipeline(DatasetConfig(kind="video", ...), DataConfig(resolution=1024, ...))`
                 reading shards built by `data_prep/make_shards.py sav`: decode only the picked
                 JPEGs (simplejpeg) and RLEs, antialiased resize, one fused warp per frame, jitter;
  (b) reference  the same frames as loose JPEG files and the masks as RLE JSON, loaded and
                 augmented the way the reference dataset does it: PIL decode at full resolution,
                 then each transform in turn at source resolution (flip, affine with PIL, resize
                 to 1024, colour jitter with PIL.ImageEnhance consistent and per frame, grayscale,
                 to tensor, normalise);
  (c) floor      simplejpeg decode + one bilinear `grid_sample` per frame straight to 1024, RLE
                 decode + one nearest `grid_sample` per mask; no resize pass, no colour work.

(b) and (c) replay exactly the clips (video, frames, objects) that (a) drew, and the three take
turns in every round, so load from other users of the machine hits them alike. Clips/s is wall
time; CPU ms / clip is user + sys of the process.

Memory: a fresh process streams `--rss-samples` image samples (synthetic SA-1B images, shards from
`data_prep/make_shards.py sa1b`, resolution 256, resampled so the stream never ends) and reads
VmRSS from /proc/self/status every 1000 samples.

Test data is rendered once into --cache (never timed).

    python benchmarks/input_pipeline.py                          # 64 clips, 10,000 image samples
    python benchmarks/input_pipeline.py --clips 8 --rss-samples 2000
    python benchmarks/input_pipeline.py --write BENCHMARKS.md    # append the section
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import add_run  # noqa: E402  (benchmarks/report.py; the script folder is on sys.path)

from sam2_scale.config import DataConfig, DatasetConfig  # noqa: E402
from sam2_scale.data.streams import clip_pipeline  # noqa: E402
from sam2_scale.data.transforms import affine_matrix, normalize_frames  # noqa: E402
from sam2_scale.synthetic import write_synthetic_dataset  # noqa: E402

NUM_FRAMES = 8
MAX_OBJECTS = 3
RESOLUTION = 1024
VIDEO_SIZE = (1280, 720)
IMAGE_SIZE = (1280, 720)
RSS_RESOLUTION = 256
RSS_EVERY = 1000
DATA_VERSION = 1  # bump when the test data below changes, to invalidate the cache

# The reference recipe (SAM 2.1 training config), applied by (b).
DEGREES, SHEAR = 25.0, 20.0
FILL = (123, 116, 103)
CLIP_JITTER = (0.1, 0.03, 0.03)  # brightness, contrast, saturation; one draw per clip
FRAME_JITTER = (0.1, 0.05, 0.05)  # one draw per frame
GRAYSCALE_PROB = 0.05
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)

METHODS = {
    "ours": "(a) ours: `clip_pipeline` from shards",
    "reference": "(b) reference-style: PIL, transform by transform",
    "floor": "(c) floor: decode + one warp per frame and mask",
}
SECTION_HEADING = "## Input pipeline (`benchmarks/input_pipeline.py`)"


# ---------------------------------------------------------------------------------------------
# Test data


def make_shards(kind, out, *source_args):
    cmd = [sys.executable, str(ROOT / "data_prep" / "make_shards.py"), kind, *source_args, "--out", str(out)]
    subprocess.run([*cmd, "--workers", "2", "--no-progress"], check=True, stdout=subprocess.DEVNULL)


def write_loose_frames(shard_dir, frames_dir):
    """The shards' frames as `<video>/<frame:05d>.jpg` (the very same JPEG bytes) and each video's
    masks as `<video>/masks.json` (frame indices, object ids, RLEs per frame and object)."""
    for shard in sorted(Path(shard_dir).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                folder = frames_dir / key
                folder.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member).read()
                if ext == "json":
                    meta = json.loads(data)
                    masks = {k: meta[k] for k in ("video_id", "frame_indices", "object_ids", "masks")}
                    (folder / "masks.json").write_text(json.dumps(masks))
                else:
                    (folder / ext).write_bytes(data)


def build_test_data(cache, num_videos, num_video_frames, num_images):
    """Shards and loose frames under `cache` (reused when already there); returns their paths."""
    root = Path(cache) / f"v{DATA_VERSION}_{num_videos}x{num_video_frames}_{num_images}img"
    paths = {
        "video_shards": root / "video_shards",
        "frames": root / "frames",
        "image_shards": root / "image_shards",
    }
    done = root / "DONE"
    if done.exists():
        return paths
    print(f"rendering test data into {root} ...", file=sys.stderr, flush=True)
    raw = root / "raw"
    write_synthetic_dataset(raw / "videos", num_videos, 0, 0, num_video_frames, VIDEO_SIZE, seed=0)
    write_synthetic_dataset(raw / "images", 0, num_images, 0, 1, IMAGE_SIZE, seed=0)
    sav = raw / "videos" / "sav"
    make_shards("sav", paths["video_shards"], "--videos", str(sav / "videos"), "--annotations", str(sav / "annotations"))
    make_shards("sa1b", paths["image_shards"], "--src", str(raw / "images" / "sa1b"), "--items-per-shard", "8")
    write_loose_frames(paths["video_shards"], paths["frames"])
    done.write_text("")
    return paths


# ---------------------------------------------------------------------------------------------
# (a) ours


def describe(clip):
    """What (b) and (c) need to rebuild the same clip."""
    return {"video": clip["source"], "frames": list(clip["frame_indices"]), "objects": list(clip["object_ids"])}


class Ours:
    def __init__(self, shard_dir, resolution=RESOLUTION):
        dataset = DatasetConfig(
            kind="video",
            num_frames=NUM_FRAMES,
            max_num_objects=MAX_OBJECTS,
            batch_size=1,
            shards=str(Path(shard_dir) / "shard-*.tar"),
        )
        data = DataConfig(resolution=resolution, shuffle_buffer=1, num_workers=0, resampled=True)
        self.batches = iter(clip_pipeline(dataset, data))

    def next_clip(self):
        (clip,) = next(self.batches)
        # Workers hand out uint8 frames; collate normalises them. Count that work here too, so
        # all three methods end with the same normalised float frames.
        return dict(clip, frames=normalize_frames(clip["frames"]))


# ---------------------------------------------------------------------------------------------
# (b) reference-style: PIL images, transform by transform at source resolution


class LooseFrames:
    """Loose JPEG files + RLE JSON, as the reference dataset reads SA-V."""

    def __init__(self, frames_dir):
        self.dir = Path(frames_dir)
        self.meta = {}

    def masks_meta(self, video):
        if video not in self.meta:  # parsed once per video: if anything, this flatters (b)
            meta = json.loads((self.dir / video / "masks.json").read_text())
            meta["row_of"] = {f: r for r, f in enumerate(meta["frame_indices"])}
            meta["column_of"] = {o: c for c, o in enumerate(meta["object_ids"])}
            self.meta[video] = meta
        return self.meta[video]

    def jpeg_path(self, video, frame):
        return self.dir / video / f"{frame:05d}.jpg"

    def rles(self, desc, frame):
        """The RLEs of the clip's objects on one frame, as pycocotools wants them."""
        meta = self.masks_meta(desc["video"])
        row = meta["masks"][meta["row_of"][frame]]
        out = []
        for obj in desc["objects"]:
            rle = row[meta["column_of"][obj]]
            out.append({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        return out


def inverse_affine_matrix(center, angle, translate, scale, shear):
    """The output-to-input map PIL's AFFINE transform takes, built as torchvision's
    `_get_inverse_affine_matrix`: the inverse of C * T * R * S * Sh * C^-1 (angles in degrees)."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    # det([[a, b], [c, d]]) == 1, so the inverse of the rotation-shear is its adjugate.
    m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def reference_load(loose, desc):
    """PIL RGB frames at full resolution and per-frame lists of PIL 'L' masks (0/1)."""
    frames, masks = [], []
    for frame in desc["frames"]:
        frames.append(Image.open(loose.jpeg_path(desc["video"], frame)).convert("RGB"))
        decoded = [mask_utils.decode(rle) for rle in loose.rles(desc, frame)]
        masks.append([Image.fromarray(m) for m in decoded])
    return frames, masks


def reference_hflip(frames, masks, rng):
    if rng.random() >= 0.5:
        return frames, masks
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    return [f.transpose(flip) for f in frames], [[m.transpose(flip) for m in ms] for ms in masks]


def reference_affine(frames, masks, rng):
    """One draw for the clip; the clip is returned unchanged if an object's frame-0 mask vanishes."""
    angle = float(rng.uniform(-DEGREES, DEGREES))
    shear_x = float(rng.uniform(-SHEAR, SHEAR))
    width, height = frames[0].size
    matrix = inverse_affine_matrix((width * 0.5, height * 0.5), angle, (0, 0), 1.0, (shear_x, 0.0))
    warped_masks = []
    for t, frame_masks in enumerate(masks):
        warped = [m.transform((width, height), Image.AFFINE, matrix, resample=Image.NEAREST, fillcolor=0) for m in frame_masks]
        if t == 0 and any(m.getbbox() is None for m in warped):
            return frames, masks
        warped_masks.append(warped)
    warped_frames = [f.transform((width, height), Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=FILL) for f in frames]
    return warped_frames, warped_masks


def reference_resize(frames, masks, size):
    """Images with PIL (antialiased bilinear); masks as tensors, bilinear then thresholded."""
    frames = [f.resize((size, size), Image.BILINEAR) for f in frames]
    out_masks = []
    for frame_masks in masks:
        resized = []
        for m in frame_masks:
            m = torch.from_numpy(np.array(m, np.uint8)).float()[None, None]
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            resized.append(m[0, 0] > 0.5)
        out_masks.append(resized)
    return frames, out_masks


def jitter_params(rng, brightness, contrast, saturation):
    """torchvision ColorJitter.get_params: factors in [1 - x, 1 + x], applied in a random order."""
    order = rng.permutation(4)
    return (
        order,
        float(rng.uniform(1 - brightness, 1 + brightness)),
        float(rng.uniform(1 - contrast, 1 + contrast)),
        float(rng.uniform(1 - saturation, 1 + saturation)),
    )


def apply_jitter(img, params):
    order, brightness, contrast, saturation = params
    for op in order:
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(brightness)
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(contrast)
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(saturation)
        # op 3 is hue, off in the recipe
    return img


def to_grayscale(img):
    gray = np.asarray(img.convert("L"))
    return Image.fromarray(np.dstack([gray, gray, gray]), "RGB")


def reference_clip(loose, desc, rng, size=RESOLUTION):
    frames, masks = reference_load(loose, desc)
    frames, masks = reference_hflip(frames, masks, rng)
    frames, masks = reference_affine(frames, masks, rng)
    frames, masks = reference_resize(frames, masks, size)
    clip_jitter = jitter_params(rng, *CLIP_JITTER)
    frames = [apply_jitter(f, clip_jitter) for f in frames]
    if rng.random() < GRAYSCALE_PROB:
        frames = [to_grayscale(f) for f in frames]
    frames = [apply_jitter(f, jitter_params(rng, *FRAME_JITTER)) for f in frames]
    tensors = []
    for f in frames:
        x = torch.from_numpy(np.array(f, np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
        tensors.append(x.sub_(MEAN).div_(STD))
    return torch.stack(tensors), torch.stack([torch.stack(ms) for ms in masks])


# ---------------------------------------------------------------------------------------------
# (c) floor: the least work that gives warped 1024 frames and masks


def floor_theta(angle, shear_x, flip, width, height, size):
    """affine_grid's theta (normalised output -> normalised source) for the reference geometry
    followed by the square resize, so one grid_sample does flip, affine and resize at once."""
    forward = affine_matrix(angle, shear_x, flip, width, height)
    out_to_source = np.linalg.inv(forward) @ np.diag([width / size, height / size, 1.0])
    from_normalised_out = np.array([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1.0]])
    to_normalised_source = np.array([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1.0]])
    theta = to_normalised_source @ out_to_source @ from_normalised_out
    return torch.from_numpy(theta[:2]).float()[None]


def floor_clip(loose, desc, rng, size=RESOLUTION):
    theta = None
    frames, masks = [], []
    for frame in desc["frames"]:
        data = loose.jpeg_path(desc["video"], frame).read_bytes()
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
        height, width = rgb.shape[:2]
        if theta is None:
            flip = rng.random() < 0.5
            angle, shear_x = float(rng.uniform(-DEGREES, DEGREES)), float(rng.uniform(-SHEAR, SHEAR))
            theta = floor_theta(angle, shear_x, flip, width, height, size)
            grid = F.affine_grid(theta, (1, 3, size, size), align_corners=False)
        img = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]
        frames.append(F.grid_sample(img, grid, mode="bilinear", align_corners=False)[0])
        decoded = np.stack([mask_utils.decode(rle) for rle in loose.rles(desc, frame)])
        m = torch.from_numpy(decoded).float()[None]
        masks.append(F.grid_sample(m, grid, mode="nearest", align_corners=False)[0] > 0.5)
    return torch.stack(frames), torch.stack(masks)


# ---------------------------------------------------------------------------------------------
# Timing


class Tally:
    def __init__(self):
        self.clips, self.wall, self.cpu = 0, 0.0, 0.0

    def time(self, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.clips += 1
        return out

    @property
    def clips_per_s(self):
        return self.clips / self.wall

    @property
    def cpu_ms(self):
        return 1000 * self.cpu / self.clips


def check_shapes(frames, masks, desc, size):
    t, o = len(desc["frames"]), len(desc["objects"])
    if tuple(frames.shape) != (t, 3, size, size) or tuple(masks.shape) != (t, o, size, size):
        raise AssertionError(f"unexpected output shapes {tuple(frames.shape)}, {tuple(masks.shape)} for {desc}")


def measure_throughput(paths, clips, rounds, warmup):
    """Per method a Tally over `clips` clips; the methods take turns, `rounds` times."""
    ours, loose = Ours(paths["video_shards"]), LooseFrames(paths["frames"])
    rng = np.random.default_rng(0)
    others = {"reference": reference_clip, "floor": floor_clip}
    for _ in range(warmup):  # imports, file cache, allocator, the pipeline's first shard
        desc = describe(ours.next_clip())
        for fn in others.values():
            fn(loose, desc, rng)
    tallies = {name: Tally() for name in METHODS}
    per_round = [clips // rounds + (i < clips % rounds) for i in range(rounds)]
    for r, n in enumerate(per_round):
        descs = []
        for _ in range(n):
            clip = tallies["ours"].time(ours.next_clip)
            descs.append(describe(clip))
            check_shapes(clip["frames"], clip["masks"], descs[-1], RESOLUTION)
        for name, fn in others.items():
            for desc in descs:
                frames, masks = tallies[name].time(lambda desc=desc, fn=fn: fn(loose, desc, rng))
                check_shapes(frames, masks, desc, RESOLUTION)
        rates = ", ".join(f"{name} {t.clips_per_s:.2f}" for name, t in tallies.items())
        print(f"round {r + 1}/{rounds}: clips/s so far {rates}", file=sys.stderr, flush=True)
    return tallies


def profile_ours(paths, clips):
    """cProfile of (a), for finding where its time goes; printed, not part of the report."""
    import cProfile
    import pstats

    ours = Ours(paths["video_shards"])
    ours.next_clip()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(clips):
        ours.next_clip()
    profiler.disable()
    print(f"profile of (a) over {clips} clips:", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)


# ---------------------------------------------------------------------------------------------
# Memory over a long image stream (own process, so the RSS is the pipeline's alone)


def vm_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_child(args):
    torch.set_num_threads(1)
    dataset = DatasetConfig(
        name="sa1b", kind="image", num_frames=1, max_num_objects=MAX_OBJECTS, shards=str(Path(args.shards) / "shard-*.tar")
    )
    data = DataConfig(resolution=RSS_RESOLUTION, num_workers=0, resampled=True)  # the default shuffle buffer (64)
    batches = iter(clip_pipeline(dataset, data))
    start = time.perf_counter()
    points = []  # (samples, seconds, VmRSS MiB)
    samples = 0
    while samples < args.rss_samples:
        next(batches)
        samples += 1
        if samples % RSS_EVERY == 0:
            elapsed = time.perf_counter() - start
            points.append((samples, elapsed, vm_rss_mib()))
            print(f"{samples} samples, {elapsed:.0f} s, VmRSS {points[-1][2]:.1f} MiB", file=sys.stderr, flush=True)
            # Stop where the next checkpoint would overrun the time budget.
            if elapsed * (samples + RSS_EVERY) / samples > args.rss_max_seconds:
                break
    print(json.dumps({"points": points, "requested": args.rss_samples}))


def measure_rss(paths, args):
    cmd = [
        sys.executable,
        __file__,
        "--_rss-child",
        "--shards",
        str(paths["image_shards"]),
        "--rss-samples",
        str(args.rss_samples),
        "--rss-max-seconds",
        str(args.rss_max_seconds),
    ]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Report


def versions():
    return f"torch {torch.__version__}, Pillow {Image.__version__}, simplejpeg {simplejpeg.__version__}"


def throughput_table(tallies):
    ref, floor = tallies["reference"], tallies["floor"]
    rows = [
        "| method | clips | wall s | clips / s | × (b) | × (c) | CPU ms / clip | CPU × (b) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in METHODS.items():
        t = tallies[name]
        rows.append(
            f"| {label} | {t.clips} | {t.wall:.1f} | {t.clips_per_s:.2f} | {t.clips_per_s / ref.clips_per_s:.2f} "
            f"| {t.clips_per_s / floor.clips_per_s:.2f} | {t.cpu_ms:.0f} | {ref.cpu_ms / t.cpu_ms:.2f} |"
        )
    return "\n".join(rows)


def rss_table(rss):
    rows = ["| samples | seconds | VmRSS MiB |", "|---|---|---|"]
    rows += [f"| {n} | {s:.0f} | {m:.1f} |" for n, s, m in rss["points"]]
    return "\n".join(rows)


def rss_growth(rss):
    points = rss["points"]
    first, last = points[0][2], points[-1][2]
    return first, last, (last - first) / first


def _met(ok):
    return "met" if ok else "not met"


def targets(tallies, rss):
    ours, ref, floor = (tallies[k] for k in ("ours", "reference", "floor"))
    speedup = ours.clips_per_s / ref.clips_per_s
    lines = [
        f"- ≥ 1.5× the clips/s of (b): **{_met(speedup >= 1.5)}** ({speedup:.2f}×; {ours.clips_per_s:.2f} vs "
        f"{ref.clips_per_s:.2f} clips/s; CPU {ref.cpu_ms / ours.cpu_ms:.2f}×); (a) runs at "
        f"{ours.clips_per_s / floor.clips_per_s:.2f}× the floor (c)",
    ]
    if rss:
        first, last, growth = rss_growth(rss)
        count = rss["points"][-1][0]
        shortened = ""
        if count < rss["requested"]:
            shortened = f", stopped at {count} of the {rss['requested']} asked, to fit the time budget"
        lines.append(
            f"- host memory flat (< 5 % growth after the first {RSS_EVERY} samples): **{_met(growth < 0.05)}** "
            f"({first:.1f} MiB at {rss['points'][0][0]} samples, {last:.1f} MiB at {count}: {growth:+.1%}{shortened})"
        )
    return "\n".join(lines)


INTRO = f"""Workload: the work of one worker (one process, `num_workers=0`, one intra-op thread):
8-frame clips of synthetic SA-V videos ({VIDEO_SIZE[0]}×{VIDEO_SIZE[1]}, every 4th frame
annotated) at {RESOLUTION}×{RESOLUTION}, up to {MAX_OBJECTS} object masks, the full SAM 2.1
augmentation. (a) `clip_pipeline` reading shards (shuffle buffer 1, resampled). (b) The same
frames as loose JPEG files plus RLE JSON, the reference way: PIL decode at full resolution, then
at source resolution flip, PIL affine (rotation ±{DEGREES:g}°, shear ±{SHEAR:g}°, bilinear,
fill {FILL}; masks nearest), then PIL resize (masks: tensor bilinear + threshold), `ImageEnhance`
colour jitter (per clip and per frame), grayscale, to tensor, normalise. (c) The floor:
simplejpeg decode, one bilinear `grid_sample` per frame to {RESOLUTION}, RLE decode, one
nearest `grid_sample` per frame's masks, no colour work. (b) and (c) replay the clips (video,
frames, objects) that (a) drew; the methods take turns each round. Clips/s from wall time;
CPU = user + sys of the process. Memory: a fresh process streams image samples (synthetic
SA-1B images {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, resolution {RSS_RESOLUTION}, shuffle buffer 64,
resampled) and reads VmRSS every {RSS_EVERY} samples."""


def section(args, tallies, rss):
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    header = (
        f"### 8-frame clips at {RESOLUTION}², {args.clips} clips per method — {datetime.date.today().isoformat()} "
        f"({machine}, load average {args.load:.1f} at start, {args.load_end:.1f} at end, {versions()})"
    )
    intro = textwrap.fill(" ".join(INTRO.split()), 96)  # the substituted numbers change the line lengths
    parts = [SECTION_HEADING, intro, header, throughput_table(tallies)]
    if rss:
        parts += [f"Host memory of (a) on the image stream at {RSS_RESOLUTION}²:", rss_table(rss)]
    parts += ["Targets:", targets(tallies, rss)]
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64, help="timed clips per method, after the warm-up (default 64)")
    parser.add_argument("--rounds", type=int, default=4, help="the methods take turns this many times (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed clips per method first (default 2)")
    parser.add_argument(
        "--rss-samples", type=int, default=10000, help="image samples of the memory run; 0 skips it (default 10000)"
    )
    parser.add_argument(
        "--rss-max-seconds",
        type=float,
        default=360,
        help="stop the memory run at the last 1000-sample checkpoint that fits in this time (default 360)",
    )
    parser.add_argument("--videos", type=int, default=4, help="synthetic SA-V videos (default 4)")
    parser.add_argument("--video-frames", type=int, default=96, help="frames per video, every 4th annotated (default 96)")
    parser.add_argument("--images", type=int, default=16, help="synthetic SA-1B images for the memory run (default 16)")
    parser.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "sam2_scale_bench_pipeline"),
        help="where the test data is kept between runs (default: <tmp>/sam2_scale_bench_pipeline)",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N clips of (a) (to stderr)")
    parser.add_argument("--write", metavar="FILE", help="append the Markdown section to FILE (e.g. BENCHMARKS.md)")
    parser.add_argument("--_rss-child", dest="rss_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clips < args.rounds:
        parser.error("--clips must be at least --rounds")
    return args


def main():
    args = parse_args()
    if args.rss_child:
        return rss_child(args)
    torch.set_num_threads(1)  # as in a DataLoader worker (`_worker_init`)
    paths = build_test_data(args.cache, args.videos, args.video_frames, args.images)
    args.load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    tallies = measure_throughput(paths, args.clips, args.rounds, args.warmup)
    if args.profile:
        profile_ours(paths, args.profile)
    rss = measure_rss(paths, args) if args.rss_samples >= RSS_EVERY else None
    args.load_end = os.getloadavg()[0]
    text = section(args, tallies, rss)
    print(text)
    if args.write:
        add_run(args.write, SECTION_HEADING, text)


if __name__ == "__main__":
    main()
