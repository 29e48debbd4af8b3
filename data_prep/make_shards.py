#!/usr/bin/env python
"""Turn SA-V, DAVIS-style and SA-1B datasets into WebDataset tar shards.

  python data_prep/make_shards.py sav   --src DIR_OF_SAV_TARS --out DIR [--max-side 1024] [--include-auto]
  python data_prep/make_shards.py sav   --videos DIR [--annotations DIR] --out DIR [--max-side 1024]
  python data_prep/make_shards.py davis --frames DIR --masks DIR --out DIR [--max-side 1024]
  python data_prep/make_shards.py sa1b  --src DIR --out DIR [--max-side 1500] [--max-masks 200]

Output: OUT/shard-NNNNNN.tar (samples, see sam2_scale/data/schema.py), OUT/shard-NNNNNN.stats.json
(samples, frames, bytes, failures with reasons, seconds), OUT/settings.json (recorded before the
first shard; a rerun with other settings or inputs is refused) and OUT/manifest.json (totals,
shard list, all failures). Release tars (SA-V, SA-1B) are read in place, never unpacked; each
shard holds inputs of one tar only. Work is split into shards deterministically from the sorted input
list, so --num-tasks/--task-id (default: from SLURM_ARRAY_TASK_COUNT/SLURM_ARRAY_TASK_ID) run
disjoint parts on different machines. A rerun skips finished shards; a killed run leaves no
shard that looks finished. Bad inputs (corrupt video or image, damaged JPEG body, missing or
malformed annotations or fields of the wrong type, RLEs that do not decode to the frame size)
are skipped and recorded; the exit status is 3 when the failure rate exceeds --max-failure-rate.
"""

import argparse
import os
import sys
from pathlib import Path

try:
    import sam2_scale  # noqa: F401
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.sa1b import Sa1bSource, find_sa1b_items
from sam2_scale.prep.sav import SavSource, find_sav_items, find_sav_tar_items
from sam2_scale.prep.shards import (
    SettingsMismatch,
    plan_shards,
    plan_shards_by_group,
    record_settings,
    run_shards,
    task_shards,
    write_manifest,
)

EXIT_TOO_MANY_FAILURES = 3


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)

    def common(p, per_shard):
        p.add_argument("--out", required=True, help="output folder for shards, stats and manifest.json")
        p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes, one shard each (default: all cores)")
        p.add_argument("--items-per-shard", type=int, default=per_shard, help=f"inputs per shard (default {per_shard})")
        p.add_argument(
            "--num-tasks",
            type=int,
            default=int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1)),
            help="split the shards over this many tasks (default: $SLURM_ARRAY_TASK_COUNT or 1)",
        )
        p.add_argument(
            "--task-id",
            type=int,
            default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)),
            help="which task this is, 0-based (default: $SLURM_ARRAY_TASK_ID or 0)",
        )
        p.add_argument(
            "--max-failure-rate", type=float, default=0.01, help="exit 3 above this fraction of failed inputs (default 0.01)"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch logs)")

    def max_side(p, default, what):
        p.add_argument(
            "--max-side",
            type=int,
            default=default,
            help=f"scale {what} down so the long side is at most this, masks with them (default: keep)",
        )

    p = sub.add_parser(
        "sav",
        help="SA-V: mp4 videos + <video>_manual.json masklets, in the release tars or a folder",
        description="SA-V videos to video shards, from the release tars (read in place) or a folder.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--src", help="folder of SA-V release tars (sav_*.tar with mp4 + json inside), read without unpacking")
    where.add_argument("--videos", help="folder searched recursively for *.mp4 (unpacked videos)")
    p.add_argument("--annotations", help="with --videos: folder searched for *_manual.json (default: --videos)")
    p.add_argument("--ann-every", type=int, default=4, help="annotated frame rate: every n-th video frame from 0 (default 4)")
    p.add_argument("--include-auto", action="store_true", help="add the *_auto.json masklets as extra objects")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the extracted frames (default 90)")
    max_side(p, 0, "frames")
    p.add_argument(
        "--decoder-threads",
        choices=("auto", "one", "frame"),
        default="auto",
        help="video decoding: one thread, or frame threads; auto (default): frame threads only "
        "while --workers leaves cores spare",
    )
    common(p, per_shard=8)

    p = sub.add_parser(
        "davis",
        help="DAVIS-style: JPEG frame folders + palette (or per-object) PNG masks",
        description="DAVIS / MOSE / YouTube-VOS / SA-V val layouts to video shards.",
    )
    p.add_argument("--frames", required=True, help="one folder of NNNNN.jpg per video")
    p.add_argument("--masks", required=True, help="one folder of NNNNN.png (palette) or <obj>/NNNNN.png per video")
    p.add_argument("--ann-every", type=int, default=1, help="keep every n-th annotated frame (default 1)")
    max_side(p, 0, "frames")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of resized frames (default 90)")
    common(p, per_shard=16)

    p = sub.add_parser(
        "sa1b",
        help="SA-1B: sa_*.jpg + sa_*.json, loose or inside the original tars",
        description="SA-1B images to image shards (one shard per input tar; loose files in chunks).",
    )
    p.add_argument("--src", required=True, help="folder with sa_*.jpg/json files and/or sa_*.tar archives")
    max_side(p, 0, "images")
    p.add_argument("--max-masks", type=int, default=0, help="keep at most this many masks per image (default: all)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality when resizing (default 90)")
    common(p, per_shard=1000)
    return parser


def make_plans(args):
    if args.kind == "sav":
        # Frame-threaded decoding only while cores are spare; with a worker per core, one
        # decoder thread each scales better.
        threads = args.workers < (os.cpu_count() or 1) if args.decoder_threads == "auto" else args.decoder_threads == "frame"
        source = SavSource(args.ann_every, args.quality, args.include_auto, args.max_side, threads=threads)
        if args.src:
            return source, plan_shards_by_group(find_sav_tar_items(args.src), args.items_per_shard)
        return source, plan_shards(find_sav_items(args.videos, args.annotations), args.items_per_shard)
    if args.kind == "davis":
        source = DavisSource(ann_every=args.ann_every, max_side=args.max_side, quality=args.quality)
        return source, plan_shards(find_davis_items(args.frames, args.masks), args.items_per_shard)
    source = Sa1bSource(max_side=args.max_side, max_masks=args.max_masks, quality=args.quality)
    items = find_sa1b_items(args.src)
    tars = [i for i in items if i[0] == "tar"]
    loose = [i for i in items if i[0] != "tar"]  # pairs, and duplicate names (recorded as failures)
    # Each original tar becomes one shard (read once, sequentially); loose files are chunked.
    return source, plan_shards_by_group([[t] for t in tars] + [loose], args.items_per_shard)


INPUT_OPTIONS = ("videos", "annotations", "frames", "masks", "src")


def check_inputs(args):
    """Every input path given exists: a typo stops here with the path named, not after a run
    that built nothing."""
    for name in INPUT_OPTIONS:
        path = getattr(args, name, None)
        if path and not Path(path).exists():
            sys.exit(f"make_shards {args.kind}: --{name} {path}: no such file or folder")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_inputs(args)
    try:
        source, plans = make_plans(args)
    except FileNotFoundError as exc:
        sys.exit(f"make_shards {args.kind}: {exc}")
    if not plans:
        given = ", ".join(f"--{n} {getattr(args, n)}" for n in INPUT_OPTIONS if getattr(args, n, None))
        sys.exit(f"make_shards {args.kind}: no input found in {given}")
    out = Path(args.out)
    settings = {
        "kind": args.kind,
        "source": source.settings(),
        "items_per_shard": args.items_per_shard,
        "num_inputs": sum(len(p.items) for p in plans),
    }
    try:
        # Before any shard: a run killed at any point leaves a record a rerun is checked against.
        record_settings(out, settings)
    except SettingsMismatch as exc:
        sys.exit(str(exc))
    mine = task_shards(plans, args.num_tasks, args.task_id)
    print(
        f"[make_shards] {args.kind}: {settings['num_inputs']} inputs in {len(plans)} shards; "
        f"task {args.task_id}/{args.num_tasks} owns {len(mine)}",
        file=sys.stderr,
    )
    built = run_shards(mine, out, source, workers=args.workers, progress=not args.no_progress)
    manifest = write_manifest(out, plans, args.kind, settings)
    attempted = manifest["samples"] + manifest["failed"]
    rate = manifest["failed"] / attempted if attempted else 0.0
    print(
        f"[make_shards] built {len(built)} shards now; {manifest['num_shards']}/{len(plans)} done; "
        f"{manifest['samples']} samples, {manifest['frames']} frames, {manifest['failed']} failed ({rate:.1%}); "
        f"manifest: {out / 'manifest.json'}",
        file=sys.stderr,
    )
    for failure in manifest["failures"][:20]:
        print(f"  failed: {failure['source']}: {failure['reason']}", file=sys.stderr)
    if rate > args.max_failure_rate:
        print(f"[make_shards] failure rate {rate:.1%} exceeds --max-failure-rate {args.max_failure_rate:.1%}", file=sys.stderr)
        return EXIT_TOO_MANY_FAILURES
    return 0


if __name__ == "__main__":
    sys.exit(main())
