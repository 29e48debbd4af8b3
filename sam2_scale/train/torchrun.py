"""torchrun with the signals and the exit status that a preemptible job needs.

    python -m sam2_scale.train.torchrun --nproc_per_node 8 -m sam2_scale.train --config configs/X.yaml

The command line is torchrun's, and torch's own launcher (torch.distributed.run) does the work,
with two differences:

- A stop signal reaches every rank. torchrun starts each rank in a session of its own, so a
  signal sent to torchrun's process group never reaches the ranks, and torchrun does not handle
  SIGUSR1 (SLURM's usual preemption signal): it dies of it and leaves the ranks training
  unsupervised, with no checkpoint. Here SIGUSR1 and SIGTERM (checkpoint at the next step
  boundary, then exit 75) and SIGUSR2 (checkpoint, continue) are passed on to every rank, and
  this process keeps supervising them until they exit.
- The exit status is the ranks': torchrun exits 1 whenever a rank fails, which hides 75
  (preempted: requeue) and 77 (non-finite loss) from the job script. Here the first rank to fail
  gives the status (128 + N for a rank killed by signal N).

A rank started by any torchrun, this one or the plain one, also asks the kernel for SIGUSR1 when
its launcher dies (`stop_when_torchrun_dies`, called first thing by `python -m sam2_scale.train`):
if plain torchrun is killed, its ranks still checkpoint and stop.
"""

import ctypes
import os
import signal
import sys

FORWARDED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR2)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_when_torchrun_dies():
    """In a rank started by torchrun (Linux): the kernel sends this process SIGUSR1 when torchrun
    exits. Called before the trainer installs its handlers: until then SIGUSR1 just ends the rank,
    which has nothing to save yet."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGUSR1)) != 0:
        print(
            f"[torchrun] prctl(PR_SET_PDEATHSIG) failed (errno {ctypes.get_errno()}): this rank will not notice torchrun's death",
            file=sys.stderr,
            flush=True,
        )
    elif os.getppid() != launcher:  # torchrun died just before the request: nobody will send the signal
        os.kill(os.getpid(), signal.SIGUSR1)


def child_pids(parent):
    """Live processes whose parent is `parent` (from /proc; torchrun does not expose its ranks)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry))
    return children


def forward_to_ranks(signum, frame):
    ranks = child_pids(os.getpid())
    print(f"[torchrun] {signal.Signals(signum).name}: passed on to {len(ranks)} rank(s)", file=sys.stderr, flush=True)
    for pid in ranks:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def exit_status(failure):
    """A rank's exit code as a shell reports it (128 + N when signal N killed it)."""
    return failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode


def main(argv=None):
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    # torchrun must leave the forwarded signals to us: for it, any signal it handles means "shut down".
    forwarded = {sig.name for sig in FORWARDED}
    kept = [s.strip() for s in args.signals_to_handle.split(",") if s.strip() and s.strip() not in forwarded]
    args.signals_to_handle = ",".join(kept) or "SIGINT"
    for sig in FORWARDED:
        signal.signal(sig, forward_to_ranks)
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = exit_status(failure)
        print(f"[torchrun] rank {rank} exited first, with {failure.exitcode}: exit {code}", file=sys.stderr, flush=True)
        sys.exit(code)
    except SignalException as exc:  # SIGINT, SIGHUP, SIGQUIT: torchrun has stopped the ranks
        sys.exit(128 + int(exc.sigval))


if __name__ == "__main__":
    main()
