"""What a world-size-independent DeepSpeed checkpoint costs, against DeepSpeed's own files alone.

DeepSpeed ZeRO writes one model file and one optimizer file per rank; they can only be read by
the same number of ranks. The engine also writes `elastic.pt`, the fp32 weights and AdamW
moments of every trainable parameter consolidated through DeepSpeed's fragment API, from which
any world size resumes. Measured on `--ranks` gloo processes: the time of DeepSpeed's own save
(the baseline) and of the engine's save (both), their bytes, and the time of a load from each
(DeepSpeed's on the same ranks, the consolidated one on `--ranks` + 1).

    python benchmarks/elastic_checkpoint.py --size tiny
    python benchmarks/elastic_checkpoint.py --size tiny small --write BENCHMARKS.md
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sam2_scale.train.distributed import free_port  # noqa: E402

HEADING = "## World-size-independent checkpoints (`benchmarks/elastic_checkpoint.py`)"


def folder_bytes(folder, name=None):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and (name is None or p.name == name))


def worker(rank, world, port, size, folder, phase, result_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ.update(MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    from sam2_scale.config import load_config
    from sam2_scale.model import build_sam2
    from sam2_scale.train.distributed import init_distributed
    from sam2_scale.train.strategies import build_engine

    info = init_distributed()
    overrides = ["train.strategy=deepspeed", "train.precision=fp32", f"train.deepspeed_config={ROOT / 'ds_configs/zero2.json'}"]
    engine = build_engine(build_sam2(size, image_size=64).train(), load_config(None, overrides), info)
    barrier = torch.distributed.barrier
    times = {}
    if phase == "save":
        engine._link_adam_state()  # moments as after a first step, so that both saves hold them

        def timed(save):
            barrier()
            start = time.perf_counter()
            save()
            barrier()
            return time.perf_counter() - start

        parent = os.path.dirname(folder)
        times["deepspeed_save_s"] = timed(lambda: engine.ds.save_checkpoint(parent, tag="deepspeed_only", save_latest=False))
        times["both_save_s"] = timed(lambda: engine.save(folder))
        times["deepspeed_load_s"] = timed(lambda: engine.load(folder))
    else:
        barrier()
        start = time.perf_counter()
        engine.load(folder, resharded=True)
        barrier()
        times["elastic_load_s"] = time.perf_counter() - start
    if rank == 0:
        Path(result_file).write_text(json.dumps(times))
    torch.distributed.destroy_process_group()


def measure(size, ranks):
    with tempfile.TemporaryDirectory() as tmp:
        folder, result = f"{tmp}/engine", f"{tmp}/result.json"
        mp.spawn(worker, args=(ranks, free_port(), size, folder, "save", result), nprocs=ranks, join=True)
        times = json.loads(Path(result).read_text())
        mp.spawn(worker, args=(ranks + 1, free_port(), size, folder, "load", result), nprocs=ranks + 1, join=True)
        times.update(json.loads(Path(result).read_text()))
        elastic = folder_bytes(folder, "elastic.pt")
        times.update(deepspeed_bytes=folder_bytes(f"{tmp}/deepspeed_only"), elastic_bytes=elastic)
    return times


def report(results, ranks):
    date = datetime.date.today().isoformat()
    lines = [
        HEADING,
        "",
        "DeepSpeed ZeRO-2's own per-rank files (the baseline) against the engine's save, which adds the",
        "consolidated `elastic.pt` for resumes on another world size; saves on the ranks below, the",
        "consolidated load on one rank more.",
        "",
        f"### {ranks} gloo ranks, fp32 — {date} ({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})",
        "",
        "| size | DeepSpeed save s | with consolidated copy s | × | DeepSpeed MB | consolidated MB | × | "
        f"DeepSpeed load s | consolidated load on {ranks + 1} s | × |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in results.items():
        save, size_mb, load = (
            (r["deepspeed_save_s"], r["both_save_s"]),
            (r["deepspeed_bytes"] / 1e6, r["elastic_bytes"] / 1e6),
            (r["deepspeed_load_s"], r["elastic_load_s"]),
        )
        cells = [f"{a:.2f} | {b:.2f} | {b / a:.2f}" for a, b in (save, load)]
        lines.append(
            f"| {size} | {cells[0]} | {size_mb[0]:.0f} | {size_mb[1]:.0f} | {size_mb[1] / size_mb[0]:.2f} | {cells[1]} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs="+", default=["tiny"], help="model sizes (tiny, small, base_plus, large)")
    parser.add_argument("--ranks", type=int, default=2, help="gloo processes that save (the load uses one more)")
    parser.add_argument("--write", metavar="MD", help="add the table to this markdown file (e.g. BENCHMARKS.md)")
    args = parser.parse_args()
    results = {size: measure(size, args.ranks) for size in args.size}
    text = report(results, args.ranks)
    print(text)
    if args.write:
        add_run(args.write, HEADING, text)


if __name__ == "__main__":
    main()
