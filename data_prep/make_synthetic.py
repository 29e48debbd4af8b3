"""Write a small synthetic dataset in the raw formats of SA-V, SA-1B and DAVIS.

Textured shapes move, bounce and occlude each other over a textured background; masks are
exact (computed from the shapes, visible pixels only). Output layout under --out:

  sav/videos/sav_000001.mp4                 H.264 yuv420p, 24 fps
  sav/annotations/sav_000001_manual.json    SA-V train format: COCO RLE masks on every 4th
                                            frame (0, 4, 8, ...), masklet_* statistics
  sa1b/sa_1.jpg, sa1b/sa_1.json             SA-1B format: 2-6 RLE masks per image
  sa1b_tars/sa_000000.tar                   the same files in an uncompressed SA-1B-style tar
  davis/JPEGImages/heldout_000/00000.jpg    held-out videos, every frame
  davis/Annotations/heldout_000/00000.png   palette PNG per frame, index = object id (1..K)
  davis_per_object/Annotations/heldout_000/000/00000.png
                                            SA-V val/test layout: one 0/255 PNG per object,
                                            every 4th frame
  davis_per_object/JPEGImages               link to (or copy of) davis/JPEGImages

Same seed, same dataset. Example:
  python data_prep/make_synthetic.py --out data/synthetic --videos 4 --frames 96
"""

import argparse
import sys
import time
from pathlib import Path

try:
    from sam2_scale.synthetic import STYLES, write_synthetic_dataset
except ImportError:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sam2_scale.synthetic import STYLES, write_synthetic_dataset


def parse_size(text):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even and at least 16 (H.264 4:2:0), got {text!r}")
    return width, height


def non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return value


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python data_prep/make_synthetic.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; existing files are overwritten)")
    parser.add_argument("--videos", type=non_negative, default=2, help="SA-V videos (default 2)")
    parser.add_argument("--images", type=non_negative, default=4, help="SA-1B images (default 4)")
    parser.add_argument("--heldout", type=non_negative, default=2, help="held-out DAVIS-style videos (default 2)")
    parser.add_argument("--frames", type=non_negative, default=48, help="frames per video, at 24 fps (default 48)")
    parser.add_argument("--size", type=parse_size, default=(320, 240), help="WIDTHxHEIGHT of videos and images (default 320x240)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--style",
        choices=sorted(STYLES),
        default="hard",
        help="hard (default): small, fast, textured shapes on a busy background; "
        "easy: big, slow, nearly flat shapes on a calm one, which a tiny model learns to track in minutes (the demo's)",
    )
    args = parser.parse_args(argv)
    if args.frames == 0 and (args.videos or args.heldout):
        parser.error("--frames must be at least 1 when writing videos")

    start = time.time()
    written = write_synthetic_dataset(
        args.out,
        num_videos=args.videos,
        num_images=args.images,
        num_heldout=args.heldout,
        num_frames=args.frames,
        size=args.size,
        seed=args.seed,
        style=STYLES[args.style],
    )
    width, height = written["size"]
    print(
        f"[synthetic] {written['out_dir']} ({width}x{height}, {args.style}, seed {written['seed']}, {time.time() - start:.1f} s)"
    )
    print(
        f"  SA-V   sav/         {_count(len(written['sav_videos']), 'video')} x {written['num_frames']} frames, "
        f"{_count(written['num_sav_masklets'], 'masklet')}"
    )
    print(
        f"  SA-1B  sa1b/        {_count(len(written['sa1b_images']), 'image')}, {_count(written['num_sa1b_masks'], 'mask')}"
        f"{', tar in sa1b_tars/' if written['sa1b_tar'] else ''}"
    )
    print(f"  DAVIS  davis/       {_count(len(written['heldout_videos']), 'held-out video')}, also in davis_per_object/")


if __name__ == "__main__":
    main()
