"""A real local SLURM cluster (launch/local_slurm) runs jobs: multi-task srun, exit codes, arrays, 2 nodes."""

import os
import subprocess
import uuid

import pytest
from local_slurm import ClusterUnavailable, sbatch_wait, start_cluster, stop_cluster

# Real training runs, clusters or the whole demo: the full tier only (`make test`). One local
# SLURM at a time (ports, munge): every test that starts one shares a pytest worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# The machine may be busy with other test runs: generous, though a job here takes about 2 s.
JOB_TIMEOUT = 180


@pytest.fixture(scope="module")
def cluster(request):
    """The cluster with request.param nodes; a different shape tears the previous one down first."""
    state = f"/tmp/slurm-state-test-{os.getpid()}-{request.param}n-{uuid.uuid4().hex[:6]}"
    try:
        env = start_cluster(state, nodes=request.param)
    except ClusterUnavailable as e:
        stop_cluster(state)
        pytest.skip(f"no local SLURM cluster: {e}")
    try:
        yield env
    finally:
        stop_cluster(state)


def one_node(f):
    return pytest.mark.parametrize("cluster", [1], indirect=True, ids=["1node"])(f)


def two_nodes(f):
    return pytest.mark.parametrize("cluster", [2], indirect=True, ids=["2nodes"])(f)


def script(tmp_path, body):
    path = tmp_path / f"job_{uuid.uuid4().hex[:8]}.sh"
    path.write_text("#!/bin/bash\n" + body)
    return path


@one_node
def test_srun_gives_every_rank(cluster, tmp_path):
    job = script(tmp_path, "srun bash -c 'echo \"PROCID=$SLURM_PROCID NTASKS=$SLURM_NTASKS\"'\n")
    out = tmp_path / "ranks.out"
    rc, job_id = sbatch_wait(
        ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", f"--output={out}", job], cluster, tmp_path, JOB_TIMEOUT
    )
    assert rc == 0, out.read_text() if out.exists() else "no output"
    assert job_id.isdigit()
    lines = sorted(out.read_text().split())
    assert lines == ["NTASKS=2", "NTASKS=2", "PROCID=0", "PROCID=1"]


@one_node
def test_exit_code_comes_back_through_sbatch_wait(cluster, tmp_path):
    rc, _ = sbatch_wait([f"--output={tmp_path / 'exit.out'}", script(tmp_path, "exit 3\n")], cluster, tmp_path, JOB_TIMEOUT)
    assert rc == 3


@one_node
def test_array_runs_every_task(cluster, tmp_path):
    job = script(tmp_path, 'echo "TASK=$SLURM_ARRAY_TASK_ID"\n')
    rc, job_id = sbatch_wait(["--array=0-1", f"--output={tmp_path}/array_%A_%a.out", job], cluster, tmp_path, JOB_TIMEOUT)
    assert rc == 0
    for task in (0, 1):
        assert (tmp_path / f"array_{job_id}_{task}.out").read_text().strip() == f"TASK={task}"


@two_nodes
def test_two_nodes(cluster, tmp_path):
    job = script(
        tmp_path,
        (
            'echo "MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"\n'
            "srun bash -c 'echo NODEID=$SLURM_NODEID NODE=$SLURMD_NODENAME ADDR=$(getent hosts $SLURMD_NODENAME)'\n"
        ),
    )
    out = tmp_path / "nodes.out"
    rc, _ = sbatch_wait(["--nodes=2", "--ntasks-per-node=1", f"--output={out}", job], cluster, tmp_path, JOB_TIMEOUT)
    text = out.read_text() if out.exists() else "no output"
    assert rc == 0, text
    lines = text.splitlines()
    assert "MASTER=n1" in lines
    # Node names resolve inside jobs (private hosts file); the machine's own /etc/hosts is untouched.
    ranks = sorted(ln.split()[:3] for ln in lines if ln.startswith("NODEID="))
    assert ranks == [["NODEID=0", "NODE=n1", "ADDR=127.0.0.1"], ["NODEID=1", "NODE=n2", "ADDR=127.0.0.1"]], text
    with open("/etc/hosts") as f:
        assert not any("n1" in ln.split()[1:] for ln in f if not ln.startswith("#"))
    assert subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], env=cluster, capture_output=True, text=True, timeout=30
    ).stdout.split() == ["n1", "n2"]
