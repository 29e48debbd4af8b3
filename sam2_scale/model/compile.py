"""Regional `torch.compile` of SAM 2.1: fewer, larger kernels where the step spends its launches.

Compiled regions: each Hiera block, each memory-attention layer, one pass of the SAM heads
(prompt encoder + mask decoder), one pass of the memory encoder. The glue between them (prompt
simulation, memory-bank assembly, the frame loop) stays eager Python: its shapes and branches
change every step, and it launches little.

Object count, memory frames, pointer tokens and prompt points change from call to call. The
callers mark those dimensions dynamic (`mark_dynamic`) so each region compiles one graph for
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


def compile_regions(model, backend="inductor"):
    """Compile `model`'s regions in place (see the module docstring). backend: a torch.compile
    backend ("inductor" for speed; "aot_eager" traces the same graphs without generating code)."""
    # Blocks of one class share their code; each distinct configuration (width, window, pooling)
    # is one more cache entry of it, beyond the default limit of 8 on large.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
    for block in model.image_encoder.trunk.blocks:
        block.compile(backend=backend)
    for layer in model.memory_attention.layers:
        layer.compile(backend=backend)
    model.memory_encoder.compile(backend=backend)
    # An instance attribute shadows the method: every caller of `_sam_heads` gets the compiled one.
    model._sam_heads = torch.compile(model._sam_heads, backend=backend)
    return model
