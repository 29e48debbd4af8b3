"""Projected multi-head attention, plain and with axial rotary position encoding (RoPE)."""

import contextlib
import contextvars
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.nn.attention import SDPBackend, sdpa_kernel

from .position import apply_axial_rope, axial_rope_table

# The kernels `attention_kernels` chose for the code running now, for `checkpoint` to re-apply.
_active_kernels = contextvars.ContextVar("attention_kernels", default=())


@contextlib.contextmanager
def attention_kernels(names):
    """A context that makes every scaled-dot-product attention use the first of `names` that
    supports its inputs (config.schema.ATTENTION_BACKENDS); no names: PyTorch's own choice."""
    if not names:
        yield
        return
    members = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    token = _active_kernels.set(tuple(names))
    try:
        with sdpa_kernel([members[n] for n in names], set_priority=True):
            yield
    finally:
        _active_kernels.reset(token)


def checkpoint(function, *args):
    """Activation checkpointing whose recompute (in the backward, outside any context the forward
    ran in) uses the attention kernels of the forward: another kernel saves other tensors, and
    the backward stops."""
    kernels = _active_kernels.get()
    return torch.utils.checkpoint.checkpoint(
        function, *args, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), attention_kernels(kernels))
    )


class Attention(nn.Module):
    """q/k/v projections to `embedding_dim // downsample_rate`, SDPA, projection back.

    Keys and values may come from a space of another width (`kv_in_dim`).
    """

    def __init__(self, embedding_dim, num_heads, downsample_rate=1, dropout=0.0, kv_in_dim=None):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _split_heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _attend(self, q, k, v):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))

    def forward(self, q, k, v):
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        return self._attend(q, k, v)


class RoPEAttention(Attention):
    """Attention with 2-D axial RoPE on queries and keys.

    Queries are a square grid of tokens. `forward` attends to keys on that grid;
    `attend_memory` to several frames of it plus tokens with no position on the grid (object
    pointers), which are not rotated.
    """

    def __init__(self, *args, rope_theta=10000.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self._rope_tables = {}  # (num tokens, device) -> table; not part of the state dict

    def rope_table_for(self, num_tokens, device):
        """The rotations of a square grid of `num_tokens` tokens (cached).

        Compiled callers look it up outside their graph and pass it in, so that a cache miss
        is never a guard of the graph."""
        key = (num_tokens, str(device))
        if key not in self._rope_tables:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"RoPE needs a square token grid, got {num_tokens} tokens")
            head_dim = self.internal_dim // self.num_heads
            self._rope_tables[key] = axial_rope_table(head_dim, side, side, self.rope_theta, device)
        return self._rope_tables[key]

    def forward(self, q, k, v, rope_table=None):
        """q, k, v: (B, N, C) tokens of the same grid."""
        table = rope_table if rope_table is not None else self.rope_table_for(q.shape[-2], q.device)
        q = apply_axial_rope(self._split_heads(self.q_proj(q)), table)
        k = apply_axial_rope(self._split_heads(self.k_proj(k)), table)
        return self._attend(q, k, self._split_heads(self.v_proj(v)))

    def attend_memory(self, q, frame_keys, frame_values, extra_keys, extra_values, rope_table=None):
        """q: (B, N, C) grid tokens; frame_keys/values: (B, frames, N, kv_in_dim), frames of the
        same grid (rotated like the queries); extra_keys/values: (B, P, kv_in_dim), not rotated.

        The frame count and P are plain tensor dimensions, so a compiled caller can treat both
        as dynamic."""
        table = rope_table if rope_table is not None else self.rope_table_for(q.shape[-2], q.device)
        q = apply_axial_rope(self._split_heads(self.q_proj(q)), table)
        b, frames, n, _ = frame_keys.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads

        def frame_heads(x):  # (B, frames, N, D) -> (B, heads, frames, N, head_dim)
            return x.reshape(b, frames, n, heads, head_dim).permute(0, 3, 1, 2, 4)

        k_frames = apply_axial_rope(frame_heads(self.k_proj(frame_keys)), table).flatten(2, 3)
        v_frames = frame_heads(self.v_proj(frame_values)).flatten(2, 3)
        k = torch.cat([k_frames, self._split_heads(self.k_proj(extra_keys))], dim=2)
        v = torch.cat([v_frames, self._split_heads(self.v_proj(extra_values))], dim=2)
        return self._attend(q, k, v)
