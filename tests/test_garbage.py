"""Python's garbage collection in the trainer: at the same steps on every rank, never on its own."""

import gc

from sam2_scale.train.garbage import GarbageCollection


def _make_cycles(n):
    for _ in range(n):
        cycle = []
        cycle.append(cycle)


def test_collections_come_at_fixed_steps_only_and_automatic_collection_returns_after():
    generations = []

    def on_collect(phase, info):
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(on_collect)
    try:
        garbage = GarbageCollection(every=3)
        assert not gc.isenabled()
        collected_at = []
        for step in range(5, 13):  # a resumed run: its first step is 5
            generations.clear()
            _make_cycles(50_000)  # far over the threshold of an automatic collection
            garbage.maybe_collect(step)
            if generations:
                assert generations == [1], f"step {step}: {generations}"
                collected_at.append(step)
        assert collected_at == [5, 6, 9, 12], "after the first step, then at multiples of `every`"
        garbage.close()
        assert gc.isenabled()

        automatic = GarbageCollection(every=0)
        generations.clear()
        _make_cycles(50_000)
        automatic.maybe_collect(1)
        assert gc.isenabled() and generations, "every=0 leaves collection to Python"
    finally:
        gc.callbacks.remove(on_collect)
        gc.enable()
