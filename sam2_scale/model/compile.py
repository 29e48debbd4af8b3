"""Regional `torch.compile` of SAM 2.1: fewer, larger kernels where the step spends its launches.

Compiled regions: each Hiera block, each memory-attention layer, one pass of the SAM heads
(prompt encoder + mask decoder), one pass of the memory encoder (under ZeRO-3 the Hiera blocks
only). A module region compiles its `forward`, so that hooks around the call stay eager. The
glue between them (prompt simulation, memory-bank assembly, the frame loop) stays eager Python:
its shapes and branches change every step, and it launches little.

Object count, memory frames, pointer tokens and prompt points change from call to call. The
callers mark those dimensions dynamic (`mark_dynamic`; a Hiera block marks its frames itself,
see `_frames_only_dynamic`) so each region compiles one graph for
all of them; sizes 0 and 1 are special to the compiler, so a region has a few graphs at most
(objects 1 or more, memory frames 1 or more, mask prompt or not), all built during the first
steps. `tests/test_compile.py` counts them with dynamo's counters.
"""

import torch


def mark_dynamic(tensor, *dims):
    """Tell the compiler these dimensions vary between calls (no-op outside compiled regions'
    callers; harmless in eager). Size 0/1 dimensions are left to specialise."""
    for dim in dims:
        torch._dynamo.maybe_mark_dynamic(tensor, dim)
    return tensor


def mark_objects_dynamic(*tensors):
    """`mark_dynamic` of dimension 0 (objects) of each tensor given; None is skipped."""
    for tensor in tensors:
        if tensor is not None:
            mark_dynamic(tensor, 0)


def compile_regions(model, backend="inductor", trunk_only=False):
    """Compile `model`'s regions in place (see the module docstring). backend: a torch.compile
    backend ("inductor" for speed; "aot_eager" traces the same graphs without generating code).
    trunk_only: the Hiera blocks alone (what ZeRO-3 can take: see the DeepSpeed engine)."""
    # Blocks of one class share their code; each distinct configuration (width, window, pooling)
    # is one more cache entry of it, beyond the default limit of 8 on large.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
    # `forward`, not the whole call: the module's hooks (FSDP's unshard, ZeRO-3's gather) stay
    # outside the graph, in eager code, where they need no tracing.
    for block in model.image_encoder.trunk.blocks:
        block.forward = _frames_only_dynamic(torch.compile(block.forward, backend=backend))
    if not trunk_only:
        for module in [*model.memory_attention.layers, model.memory_encoder]:
            module.forward = torch.compile(module.forward, backend=backend)
        # An instance attribute shadows the method: every caller of `_sam_heads` gets the compiled one.
        model._sam_heads = torch.compile(model._sam_heads, backend=backend)
    return model


def _frames_only_dynamic(compiled_forward):
    """A Hiera block's graphs vary in frames alone (clips x clip length, marked dynamic here);
    grid, width, heads and window are its configuration. The blocks share one `forward`, so the
    compiler, meeting several configurations, would by default trace those as symbols too
    (measured on tiny: 10-40x slower to trace, and kernels for symbolic widths). Automatic
    dynamic shapes are off while a block compiles."""
    compiled_forward = torch._dynamo.config.patch(automatic_dynamic_shapes=False)(compiled_forward)

    def forward(x):
        # FSDP2's pre-forward hook hands the block a view of the trunk's tensor in the forward
        # but not in a checkpoint's recompute (the hook skips it), and the compiler guards on
        # views: the two would run different graphs, which save different tensors. A view of
        # either is the same kind of input.
        return compiled_forward(mark_dynamic(x.view_as(x), 0))

    return forward


def compile_counts():
    """(graphs compiled, graph breaks met) by this process so far, from dynamo's counters: a graph
    count that still grows after the first steps is a recompile."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
