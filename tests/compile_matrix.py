"""Several trainer runs in one set of rank processes, one after the other, through the trainer's
own `train()`: the compiled regions are traced by the first compiled run and served from dynamo's
cache to every later one (tracing is minutes on a CPU, a run of a few steps is seconds).

    RANK=.. WORLD_SIZE=.. MASTER_ADDR=.. MASTER_PORT=.. python tests/compile_matrix.py CASES.json

CASES.json: {"config": base YAML, "runs": [{"name": out_dir, "overrides": ["key=value", ...],
"resume": optional checkpoint folder}]}.
Each run writes its own out_dir; rank 0 appends "<name> <exit code>" to CASES.json.codes.
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from sam2_scale.config import load_config
from sam2_scale.train.distributed import init_distributed
from sam2_scale.train.trainer import train


def main(cases_file):
    cases = json.loads(Path(cases_file).read_text())
    info = init_distributed()  # held across the runs: train() joins it and leaves it up
    for run in cases["runs"]:
        cfg = load_config(cases["config"], [*run["overrides"], f"train.out_dir={run['name']}"])
        code = train(cfg, resume=run.get("resume", "none"))
        if info.is_main:
            with open(f"{cases_file}.codes", "a") as f:
                f.write(f"{run['name']} {code}\n")
        if code:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
