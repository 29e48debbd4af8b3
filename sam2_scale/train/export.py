"""Export a training checkpoint (any strategy, any world size) as one consolidated SAM 2.1 `.pt`
in Meta's format ({"model": state_dict}), loadable by Meta's `build_sam2(ckpt_path=...)` and by
`sam2_scale.model.load_checkpoint`.

    python -m sam2_scale.train.export runs/x/checkpoints/step_00001000 sam2.1_hiera_b+.pt [--ema]

CHECKPOINT may also be a run folder or its checkpoints/ folder: the newest complete one is used.
Runs in one process without a GPU; optimizer state is never loaded. Nothing is unpickled beyond
plain data (see safe_load.py): a checkpoint file that would run code is refused.
"""

import argparse
import os
import sys

from ..checkpoints.layout import CheckpointError, find_checkpoint
from ..checkpoints.safe_load import UnsafeCheckpointError
from ..checkpoints.weights import consolidated_state_dict
from ..model.checkpoint_io import atomic_torch_save


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.train.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint folder (step_XXXXXXXX), a checkpoints/ folder or a run folder")
    parser.add_argument("output", help="the .pt file to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights (runs with train.ema_decay > 0)")
    args = parser.parse_args(argv)
    try:
        step_dir = find_checkpoint(args.checkpoint)
        state, config = consolidated_state_dict(step_dir, ema=args.ema)
    except (FileNotFoundError, CheckpointError, UnsafeCheckpointError) as exc:
        sys.exit(f"error: {exc}")
    atomic_torch_save({"model": state}, args.output)
    size = config["model"]["size"]
    print(f"{step_dir} -> {os.path.abspath(args.output)} (SAM 2.1 {size}, {len(state)} tensors{', EMA' if args.ema else ''})")


if __name__ == "__main__":
    main()
