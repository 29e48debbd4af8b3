"""Which samples of one dataset the whole run has consumed in the current epoch, whatever the
number of ranks and workers that read them.

A dataset's epoch is a sequence of *draws* numbered 0, 1, 2, ...: draw g reads shard g
(each shard once, `data.resampled=false`) or the g-th shard of a sequence drawn i.i.d. from
(seed, epoch) (`data.resampled=true`). Neither depends on the world size. Samples are addressed
as (draw, index in the shard), and a sample is *consumed* once it reached the trainer or was
skipped as bad. The ledger records that: a draw is finished when all of its samples are
consumed (its size is known from its last sample, which the reader marks), and draws below the
`frontier` are all finished. A stream that starts from a ledger reads only what it has not
consumed: unfinished draws, and in a partly read draw only the samples not yet taken.
"""

import itertools


class Ledger:
    def __init__(self):
        self.frontier = 0  # every draw below it is finished
        self.finished = set()  # finished draws at or above the frontier
        self.taken = {}  # unfinished draw -> indices of its consumed samples
        self.sizes = {}  # unfinished draw -> its number of samples, once its last sample was consumed

    def is_finished(self, draw):
        return draw < self.frontier or draw in self.finished

    def taken_in(self, draw):
        return frozenset(self.taken.get(draw, ()))

    def record(self, draw, index, last):
        """Sample `index` of `draw` reached the trainer or was skipped; `last`: no sample follows it."""
        if self.is_finished(draw):
            return
        taken = self.taken.setdefault(draw, set())
        taken.add(index)
        if last:
            self.sizes[draw] = index + 1
        if self.sizes.get(draw) == len(taken):
            self._finish(draw)

    def _finish(self, draw):
        self.taken.pop(draw, None)
        self.sizes.pop(draw, None)
        self.finished.add(draw)
        while self.frontier in self.finished:
            self.finished.remove(self.frontier)
            self.frontier += 1

    def pending(self, limit=None):
        """Unfinished draws in order, from the frontier (up to `limit` draws in all, or forever)."""
        draws = itertools.count(self.frontier) if limit is None else range(self.frontier, limit)
        return (g for g in draws if g not in self.finished)

    def num_consumed(self):
        """Consumed samples of unfinished draws (finished draws count as whole shards, not samples)."""
        return sum(len(t) for t in self.taken.values())

    def state_dict(self):
        """Plain lists and string keys: the state must survive JSON as well as torch.save."""
        return {
            "frontier": self.frontier,
            "finished": sorted(self.finished),
            "taken": {str(d): sorted(t) for d, t in self.taken.items()},
            "sizes": {str(d): n for d, n in self.sizes.items()},
        }

    @classmethod
    def from_state(cls, state):
        return cls.union([state])

    @classmethod
    def union(cls, states):
        """One ledger holding everything any of `states` consumed (e.g. one per rank)."""
        ledger = cls()
        ledger.frontier = min((s["frontier"] for s in states), default=0)
        for s in states:
            ledger.finished.update(range(ledger.frontier, s["frontier"]))
            ledger.finished.update(s["finished"])
        for s in states:
            for draw, n in s["sizes"].items():
                ledger.sizes.setdefault(int(draw), n)
        for s in states:
            for draw, indices in s["taken"].items():
                draw = int(draw)
                if not ledger.is_finished(draw):
                    ledger.taken.setdefault(draw, set()).update(indices)
        for draw in [d for d in ledger.taken if ledger.sizes.get(d) == len(ledger.taken[d])]:
            ledger._finish(draw)
        for draw in list(ledger.finished):
            ledger.taken.pop(draw, None)
            ledger.sizes.pop(draw, None)
        while ledger.frontier in ledger.finished:
            ledger.finished.remove(ledger.frontier)
            ledger.frontier += 1
        return ledger
