"""Memory attention: condition the current frame's stride-16 tokens on the memory bank
(spatial memories of past frames + object-pointer tokens) with 4 pre-norm RoPE layers.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    def __init__(self, d_model=256, dim_feedforward=2048, dropout=0.1, kv_in_dim=64, rope_theta=10000.0):
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.self_attn = RoPEAttention(d_model, num_heads=1, dropout=dropout, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(
            d_model, num_heads=1, dropout=dropout, kv_in_dim=kv_in_dim, rope_theta=rope_theta, rope_k_repeat=True
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, memory, pos, num_k_exclude_rope=0):
        """tgt: (B, N, C) current-frame tokens; memory, pos: (B, M, kv_in_dim).

        Positional encodings reach only the memory keys (2.1 config); queries get RoPE only.
        """
        x = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(x, x, x))
        x = self.norm2(tgt)
        x = self.cross_attn_image(q=x, k=memory + pos, v=memory, num_k_exclude_rope=num_k_exclude_rope)
        tgt = tgt + self.dropout2(x)
        x = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    def __init__(self, d_model=256, num_layers=4, activation_checkpointing=False, **layer_kwargs):
        super().__init__()
        self.d_model = d_model
        self.num_layers = num_layers
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, **layer_kwargs) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = True
        self.activation_checkpointing = activation_checkpointing

    def forward(self, curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        """Sequence-first tensors: curr (N, B, C) or a one-element list of it, memory (M, B, 64).

        Returns the memory-conditioned tokens (N, B, C).
        """
        if isinstance(curr, list):
            (curr,), (curr_pos,) = curr, curr_pos
        if curr.shape[1] != memory.shape[1]:
            raise ValueError(f"batch of current frame ({curr.shape[1]}) != batch of memory ({memory.shape[1]})")
        x = curr + 0.1 * curr_pos  # a small dose of absolute position at the input only
        x, memory, memory_pos = x.transpose(0, 1), memory.transpose(0, 1), memory_pos.transpose(0, 1)
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if use_ckpt:
                x = checkpoint(layer, x, memory, memory_pos, num_obj_ptr_tokens, use_reentrant=False)
            else:
                x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
        return self.norm(x).transpose(0, 1)
