"""Projected multi-head attention, plain and with axial rotary position encoding (RoPE)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .position import apply_axial_rope, axial_rope_table


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

    Queries are a square grid of tokens. Keys may be several frames of that grid
    (`rope_k_repeat`), followed by `num_k_exclude_rope` tokens (object pointers) that have no
    position on the grid and are not rotated.
    """

    def __init__(self, *args, rope_theta=10000.0, rope_k_repeat=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._rope_tables = {}  # (num tokens, device) -> table; not part of the state dict

    def _rope_table(self, num_tokens, device):
        key = (num_tokens, str(device))
        if key not in self._rope_tables:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"RoPE needs a square token grid, got {num_tokens} tokens")
            head_dim = self.internal_dim // self.num_heads
            self._rope_tables[key] = axial_rope_table(head_dim, side, side, self.rope_theta, device)
        return self._rope_tables[key]

    def forward(self, q, k, v, num_k_exclude_rope=0):
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        table = self._rope_table(q.shape[-2], q.device)
        q = apply_axial_rope(q, table)
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            if num_k_rope != q.shape[-2] and not self.rope_k_repeat:
                raise ValueError("keys and queries differ in length; set rope_k_repeat")
            k_rot = apply_axial_rope(k[:, :, :num_k_rope], table, repeat=num_k_rope // q.shape[-2])
            k = torch.cat([k_rot, k[:, :, num_k_rope:]], dim=2)
        return self._attend(q, k, v)
