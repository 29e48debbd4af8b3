"""Python's cyclic garbage collection at fixed steps, on every rank at the same step.

Left automatic, a collection starts whenever a rank has allocated enough Python objects: at a
different moment on each rank, and the others wait for it in the next collective (on hundreds of
ranks, some rank is always collecting). Tracing for torch.compile allocates millions of objects,
so automatic collection also costs a tenth of the first step's time. Reference counting still
frees everything without cycles at once; only cycles wait for the next collection.
"""

import gc


class GarbageCollection:
    """Automatic collection off while the run lives; the young generations collected after this
    process's first step (the one that compiles) and at every step that is a multiple of `every`.
    `every` 0: left automatic."""

    def __init__(self, every):
        self.every = every
        self.was_enabled = gc.isenabled()
        self.first_step_done = False
        if every:
            gc.collect()
            gc.disable()

    def maybe_collect(self, step):
        if self.every and (not self.first_step_done or step % self.every == 0):
            gc.collect(1)
        self.first_step_done = True

    def close(self):
        """Back to how the process had it (a driver may run several trainings in one process)."""
        if self.every and self.was_enabled:
            gc.enable()
