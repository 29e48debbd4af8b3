"""Process group setup for the three ways a run starts: torchrun, srun (one task per GPU) and
a plain single process. Every run gets a process group, even with one process, so the
training loop and the engines never special-case world size 1.
"""

import datetime
import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def free_port():
    """A TCP port on this host that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_slurm_host():
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("running under srun but SLURM_JOB_NODELIST is not set; export MASTER_ADDR")
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"cannot expand SLURM node list {nodelist!r} with scontrol ({exc}); export MASTER_ADDR") from exc
    return hosts.stdout.split()[0]


def _export_launcher_env():
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (read by torch and DeepSpeed)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or a launcher that already set them
        env.setdefault("LOCAL_RANK", "0")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:  # srun, one task per device
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "MASTER_ADDR" not in env:
            env["MASTER_ADDR"] = _first_slurm_host()
        # A port derived from the job id: every task computes the same one without talking.
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:  # a single process
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(free_port()))


def cuda_device_index(local_rank, visible):
    """This process's GPU among the `visible` ones: LOCAL_RANK where the node's GPUs are all
    visible (torchrun, srun with --gpus-per-node), the only one where SLURM binds a GPU to each
    task (--gpus-per-task=1, --gpu-bind)."""
    if visible == 1:
        return 0
    if not 0 <= local_rank < visible:
        raise RuntimeError(
            f"LOCAL_RANK {local_rank} but {visible} GPU(s) visible (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): give each task one GPU or all of the node's"
        )
    return local_rank


def init_distributed(timeout_s=None):
    """Join (or create) the process group, whose collectives fail after `timeout_s` seconds
    (None: torch's default); returns this process's DistInfo."""
    _export_launcher_env()
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if torch.cuda.is_available():
        device = torch.device("cuda", cuda_device_index(local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        device_id = device if backend == "nccl" else None
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout, device_id=device_id)
    return DistInfo(rank, world_size, local_rank, device)


def all_reduce_max(values, device):
    """Element-wise max over ranks of a list of floats."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_reduce_sum(values, device):
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def cpu_has_native_bf16():
    """Whether this x86 CPU multiplies bf16 in hardware; without it torch's bf16 matmul is emulated."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
