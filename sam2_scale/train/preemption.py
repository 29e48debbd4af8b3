"""Preemption: SIGUSR1 / SIGTERM ask the run to checkpoint at the next step boundary and exit
with EXIT_PREEMPTED (the launcher requeues on that code). SIGUSR2 asks for a checkpoint and the
run continues.

The handlers only set flags; ranks agree on them with one small all-reduce per step, so all
ranks save the same step even when the signal reaches them at different moments. A forced-exit
timer starts with the first stop signal: if the save has not finished within `grace_s` (a
collective hung because a peer died, a file system stalled), the process exits with EXIT_HUNG
instead of waiting for SIGKILL.
"""

import os
import signal
import sys
import threading

import torch
import torch.distributed as dist

EXIT_PREEMPTED = 75  # checkpoint written; requeue and resume
EXIT_HUNG = 76  # stop requested, but the checkpoint did not finish in time
EXIT_NONFINITE = 77  # too many non-finite steps in a row

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption:
    def __init__(self, grace_s):
        self.grace_s = grace_s
        self.stop_signal = None
        self.save_requested = False
        self._timer = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGUSR2, self._on_save)

    def _on_stop(self, signum, frame):
        if self.stop_signal is None:
            self.stop_signal = signal.Signals(signum).name
            print(
                f"[preemption] {self.stop_signal}: checkpoint at the next step boundary, then exit", file=sys.stderr, flush=True
            )
            self._timer = threading.Timer(self.grace_s, self._force_exit)
            self._timer.daemon = True
            self._timer.start()

    def _on_save(self, signum, frame):
        self.save_requested = True

    def _force_exit(self):
        print(
            f"[preemption] no clean exit {self.grace_s:.0f} s after {self.stop_signal}; forcing exit {EXIT_HUNG}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_HUNG)

    def poll(self, device):
        """(stop, save) agreed over all ranks: true if any rank got the signal."""
        flags = torch.tensor([self.stop_signal is not None, self.save_requested], dtype=torch.int32, device=device)
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.save_requested = False
        return bool(flags[0]), bool(flags[1])

    def disarm(self):
        if self._timer is not None:
            self._timer.cancel()
