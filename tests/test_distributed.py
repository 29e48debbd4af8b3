"""Process-group setup for cluster launches: which GPU a rank takes, and collectives that fail
after train.dist_timeout_s instead of hanging."""

import json
import os
import time

import pytest
import torch.multiprocessing as mp
from test_trainer import free_port

from sam2_scale.train.distributed import cuda_device_index


@pytest.mark.parametrize(
    "local_rank,visible,expected",
    [
        (0, 1, 0),  # one task, one GPU
        (3, 1, 0),  # srun --gpus-per-task=1 / --gpu-bind: each task sees only its own GPU
        (3, 8, 3),  # torchrun, or srun with all of the node's GPUs visible to every task
        (0, 8, 0),
    ],
)
def test_a_rank_takes_its_own_gpu_however_many_are_visible(local_rank, visible, expected):
    assert cuda_device_index(local_rank, visible) == expected


def test_more_ranks_than_visible_gpus_is_an_error_naming_the_variables(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK 3 but 2 GPU\(s\) visible \(CUDA_VISIBLE_DEVICES=4,5\)"):
        cuda_device_index(3, 2)


def _rank_waits_for_a_silent_peer(rank, world, port, result_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    import torch.distributed as dist

    from sam2_scale.train.distributed import init_distributed

    init_distributed(timeout_s=2)
    if rank == 1:
        time.sleep(6)  # a hung rank: never enters the collective in time
        return
    start = time.time()
    try:
        dist.barrier()
        error = None
    except RuntimeError as exc:
        error = str(exc)
    with open(result_file, "w") as f:
        json.dump({"error": error, "waited": time.time() - start}, f)


@pytest.mark.slow  # two processes
def test_a_collective_fails_after_the_timeout_instead_of_hanging(tmp_path):
    result_file = tmp_path / "result.json"
    mp.spawn(_rank_waits_for_a_silent_peer, args=(2, free_port(), str(result_file)), nprocs=2, join=True)
    result = json.loads(result_file.read_text())
    assert result["error"] is not None, "the barrier returned although one rank never joined"
    assert 1.5 < result["waited"] < 10, result


def test_adam_steps_made_for_a_resume_live_where_adamw_keeps_them():
    """Moments and steps created before an elastic DeepSpeed load: fused (and capturable) AdamW
    wants its step on the parameter's device; `meta` stands for the GPU."""
    import torch

    from sam2_scale.train.deepspeed_engine import new_adam_step

    param = torch.empty(4, device="meta")
    assert new_adam_step({"fused": True}, param).device.type == "meta"
    assert new_adam_step({"capturable": True, "fused": None}, param).device.type == "meta"
    assert new_adam_step({"fused": None, "capturable": False}, param).device.type == "cpu"
    # What torch's AdamW itself creates, for comparison: the same places.
    weight = torch.nn.Parameter(torch.zeros(4))
    weight.grad = torch.zeros(4)
    adamw = torch.optim.AdamW([weight], fused=True)
    adamw.step()
    assert adamw.state[weight]["step"].device == weight.device == new_adam_step(adamw.param_groups[0], weight).device
