"""What the prep-time input checks cost: SA-1B images through the shard writer with and without
the full JPEG decode and the RLE counts decode, in the same run.

Before these checks, `make_shards.py sa1b` read only the JPEG header and the RLE's structure
(dict, size, counts type), so a damaged JPEG body or garbage counts went into the shards. Now
the JPEG body is decoded (`prep.validate.jpeg_size`: every coded byte parsed, at the smallest
DCT scale) and the counts are decoded to run lengths that must cover the image
(`data.rle.check`). Four configurations build the same shard from the same SA-1B-style tar:
header only (as before), + JPEG decode, + RLE decode, both (as now), and the first and last
with `--max-side 1500`; CPU time is the process time of `build_shard` (reading, checks, JSON,
resizing, tar writing), interleaved repeats, medians.
A full-scale decode of every JPEG is timed too, for the choice of the DCT scale.

Images are SA-1B-like: 2250×1500 (SA-1B's typical size), textured so the JPEG has SA-1B's
typical bytes per pixel, with about 100 masks of very different sizes (SA-1B's mean).

    python benchmarks/prep_checks.py                 # 8 images, 5 repeats
    python benchmarks/prep_checks.py --write BENCHMARKS.md
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import simplejpeg  # noqa: E402
from PIL import Image  # noqa: E402

from sam2_scale.data import rle as rle_utils  # noqa: E402
from sam2_scale.prep import sa1b  # noqa: E402
from sam2_scale.prep.shards import ShardPlan, build_shard  # noqa: E402

# label -> (JPEG body decode, RLE counts decode, --max-side)
CONFIGS = {
    "header only (before)": (False, False, 0),
    "+ JPEG body decode": (True, False, 0),
    "+ RLE counts decode": (False, True, 0),
    "both (now)": (True, True, 0),
    "`--max-side 1500`, header only (before)": (False, False, 1500),
    "`--max-side 1500`, both (now)": (True, True, 1500),
}


def textured_image(rng, height, width):
    """uint8 RGB: noise at 4-64 px scales: about as many JPEG bytes as an SA-1B photo."""
    image = np.zeros((height, width, 3), np.float32)
    for scale, weight in ((64, 60), (16, 40), (4, 8)):
        small = rng.normal(size=(height // scale + 1, width // scale + 1, 3)).astype(np.float32)
        big = np.asarray(Image.fromarray(small[..., 0]).resize((width, height), Image.BILINEAR))[..., None]
        image += weight * big * np.asarray([1.0, 0.8, 0.6], np.float32)
    return np.clip(image + 128, 0, 255).astype(np.uint8)


def random_masks(rng, height, width, count):
    """`count` ellipses from 0.01 % to 20 % of the image, as SA-1B annotations."""
    yy, xx = np.mgrid[0:height, 0:width]
    annotations = []
    for i in range(count):
        area = height * width * 10 ** rng.uniform(-4, np.log10(0.2))
        a = np.sqrt(area / np.pi) * rng.uniform(0.5, 2.0)
        b = area / (np.pi * a)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        mask = ((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2 <= 1
        rle = rle_utils.encode(mask)
        box = [float(cx - a), float(cy - b), float(2 * a), float(2 * b)]
        annotations.append({"id": i, "segmentation": rle, "bbox": box, "area": int(mask.sum()), "predicted_iou": 0.9})
    return annotations


def write_test_tar(path, num_images, height, width, num_masks, seed=0):
    rng = np.random.default_rng(seed)
    jpeg_bytes = 0
    with tarfile.open(path, "w") as tar:
        for i in range(1, num_images + 1):
            jpeg = simplejpeg.encode_jpeg(textured_image(rng, height, width), quality=90, colorspace="RGB")
            meta = {
                "image": {"image_id": i, "width": width, "height": height, "file_name": f"sa_{i}.jpg"},
                "annotations": random_masks(rng, height, width, num_masks),
            }
            jpeg_bytes += len(jpeg)
            for name, data in ((f"sa_{i}.jpg", jpeg), (f"sa_{i}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return jpeg_bytes / num_images


def _header_only_jpeg_size(data, where):
    try:
        return simplejpeg.decode_jpeg_header(data)[:2]
    except ValueError as exc:
        raise sa1b.SampleError(f"{where}: unreadable JPEG: {exc}") from exc


@contextlib.contextmanager
def checks(jpeg_body, rle_counts):
    """Switch the two decodes off for a measurement (the code as it was before them)."""
    saved = sa1b.jpeg_size, rle_utils._check_runs
    if not jpeg_body:
        sa1b.jpeg_size = _header_only_jpeg_size
    if not rle_counts:
        rle_utils._check_runs = lambda counts, height, width: None
    try:
        yield
    finally:
        sa1b.jpeg_size, rle_utils._check_runs = saved


def measure(tar_path, out_dir, config):
    plan = ShardPlan(0, (("tar", str(tar_path)),))
    jpeg_body, rle_counts, max_side = CONFIGS[config]
    with checks(jpeg_body, rle_counts):
        start = time.process_time()
        stats = build_shard(plan, out_dir, sa1b.Sa1bSource(max_side=max_side))
        seconds = time.process_time() - start
    assert not stats["failures"], stats["failures"]
    return seconds / stats["samples"]


def full_scale_decode_seconds(tar_path):
    with tarfile.open(tar_path) as tar:
        jpegs = [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]
    timings = {}
    for label, kwargs in (("smallest DCT scale", {"min_height": 1, "min_width": 1}), ("full scale", {})):
        start = time.process_time()
        for data in jpegs:
            simplejpeg.decode_jpeg(data, **kwargs)
        timings[label] = (time.process_time() - start) / len(jpegs)
    return timings


SECTION_HEADING = "## Prep input checks (`benchmarks/prep_checks.py`)"

INTRO = """\
Workload: `build_shard` on one SA-1B-style tar, one process: the JPEG bytes copied through
(`make_shards.py sa1b` without `--max-side`, where the checks are new work), and resized with
`--max-side 1500` (as in the README) for scale. "Header only" is the prep as it was
before issue 18 (JPEG header, RLE structure); "JPEG body decode" parses every coded byte at the
smallest DCT scale, "RLE counts decode" decodes each RLE's counts to run lengths and checks they
cover the image. CPU = process time of the whole shard build per image (reading the tar, checks,
JSON, resizing where asked, tar writing), median over interleaved repeats."""


def section(args, per_image, decode, jpeg_kib):
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    header = (
        f"### {args.width}×{args.height} JPEG (~{jpeg_kib:.0f} KiB), {args.masks} masks per image, "
        f"{args.images} images — {datetime.date.today().isoformat()} ({machine}, load average {args.load:.1f} at start, "
        f"{args.load_end:.1f} at end, simplejpeg {simplejpeg.__version__}; {args.repeats} repeats)"
    )
    rows = ["| checks | CPU ms / image | × header only |", "|---|---|---|"]
    for label, seconds in per_image.items():
        base = per_image[label.split(", ")[0] + ", header only (before)" if "max-side" in label else "header only (before)"]
        rows.append(f"| {label} | {seconds * 1e3:.1f} | {seconds / base:.2f} |")
    scale = (
        f"JPEG decode alone: {decode['smallest DCT scale'] * 1e3:.1f} ms at the smallest DCT scale (what the check "
        f"uses; it reports the same truncation and corruption), {decode['full scale'] * 1e3:.1f} ms at full scale."
    )
    return "\n\n".join([SECTION_HEADING, INTRO, header, "\n".join(rows), scale])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images in the test tar (default 8)")
    parser.add_argument("--width", type=int, default=2250, help="image width (default 2250)")
    parser.add_argument("--height", type=int, default=1500, help="image height (default 1500)")
    parser.add_argument("--masks", type=int, default=100, help="masks per image (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats, medians reported (default 5)")
    parser.add_argument("--write", metavar="FILE", help="append the Markdown section to FILE (e.g. BENCHMARKS.md)")
    return parser.parse_args()


def main():
    args = parse_args()
    args.load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "sa_000000.tar"
        print("writing the test tar ...", file=sys.stderr, flush=True)
        jpeg_kib = write_test_tar(tar_path, args.images, args.height, args.width, args.masks) / 1024
        runs = {config: [] for config in CONFIGS}
        for repeat in range(args.repeats):
            for i, config in enumerate(CONFIGS):
                out_dir = Path(tmp) / f"out_{repeat}_{i}"
                out_dir.mkdir()
                runs[config].append(measure(tar_path, out_dir, config))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        decode = full_scale_decode_seconds(tar_path)
    args.load_end = os.getloadavg()[0]
    per_image = {config: statistics.median(values) for config, values in runs.items()}
    text = section(args, per_image, decode, jpeg_kib)
    print(text)
    if args.write:
        add_run(args.write, SECTION_HEADING, text)


if __name__ == "__main__":
    main()
