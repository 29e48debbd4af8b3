"""Comparing two sets of gradients that should be equal up to floating-point summation order."""


def assert_same_gradients(got, want, rel=1e-4):
    """got, want: {name: gradient}. Each tensor within `rel` in relative L2 error. Attention key
    biases have a gradient that is exactly 0 in exact arithmetic (softmax ignores a shift shared
    by all keys): theirs is rounding noise, held to 1e-6 of the largest gradient instead."""
    assert got.keys() == want.keys(), got.keys() ^ want.keys()
    largest = max(g.abs().max().item() for g in want.values())
    for name, g in want.items():
        error = (got[name] - g).norm().item()
        assert error <= rel * g.norm().item() + 1e-6 * largest * g.numel() ** 0.5, (name, error, g.norm().item())
