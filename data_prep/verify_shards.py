#!/usr/bin/env python
"""Read every sample of a shard folder back: decode each JPEG and RLE, check them against the
sample metadata, and check counts, sizes and keys against manifest.json.

  python data_prep/verify_shards.py OUT [OUT ...]

Exit status 0 when every folder is sound, 1 otherwise (each problem is printed).
"""

import argparse
import sys
from pathlib import Path

try:
    import sam2_scale  # noqa: F401
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam2_scale.prep.verify import verify_shards


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="shard folders written by make_shards.py")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        report, problems = verify_shards(folder, progress=not args.no_progress)
        for problem in problems:
            print(f"  problem: {problem}")
        verdict = "OK" if not problems else f"{len(problems)} problem(s)"
        print(f"[verify] {folder}: {verdict}; {report}")
        status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main())
