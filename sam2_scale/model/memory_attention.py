"""Memory attention: condition the current frame's stride-16 tokens on the memory bank
(spatial memories of past frames + object-pointer tokens) with 4 pre-norm RoPE layers.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import RoPEAttention, checkpoint
from .compile import mark_dynamic


class MemoryAttentionLayer(nn.Module):
    def __init__(self, d_model=256, dim_feedforward=2048, dropout=0.1, kv_in_dim=64, rope_theta=10000.0):
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.self_attn = RoPEAttention(d_model, num_heads=1, dropout=dropout, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads=1, dropout=dropout, kv_in_dim=kv_in_dim, rope_theta=rope_theta)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, memory, pos, obj_ptrs, obj_ptrs_pos, rope_table):
        """tgt: (B, N, C) current-frame tokens; memory, pos: (B, frames, N, kv_in_dim) spatial
        memories; obj_ptrs, obj_ptrs_pos: (B, P, kv_in_dim) object-pointer tokens (P may be 0);
        rope_table: the grid's RoPE rotations (`RoPEAttention.rope_table_for`).

        Frames and pointers arrive as their own tensor dimensions, never as Python numbers, so a
        compiled layer can treat their counts as dynamic. Positional encodings reach only the
        memory keys (2.1 config); queries get RoPE only.
        """
        x = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(x, x, x, rope_table=rope_table))
        x = self.norm2(tgt)
        x = self.cross_attn_image.attend_memory(x, memory + pos, memory, obj_ptrs + obj_ptrs_pos, obj_ptrs, rope_table)
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

    def forward(self, curr, curr_pos, memory, memory_pos, obj_ptrs, obj_ptrs_pos):
        """curr, curr_pos: (N, B, C) sequence-first current-frame tokens; memory, memory_pos:
        (B, frames, N, 64) spatial memories; obj_ptrs, obj_ptrs_pos: (B, P, 64) pointer tokens.

        Returns the memory-conditioned tokens (N, B, C).
        """
        if curr.shape[1] != memory.shape[0]:
            raise ValueError(f"batch of current frame ({curr.shape[1]}) != batch of memory ({memory.shape[0]})")
        # A small dose of absolute position at the input only. Dense inputs: compiled layers would
        # otherwise specialise on the strides, which change with the batch.
        x = (curr + 0.1 * curr_pos).transpose(0, 1).contiguous()
        # Both attentions of every layer rotate by the same grid's table (1 head of 256 dims).
        rope_table = self.layers[0].self_attn.rope_table_for(curr.shape[0], curr.device)
        # Objects, memory frames and pointer tokens vary from frame to frame and clip to clip.
        inputs = (*(mark_dynamic(t.contiguous(), 0, 1) for t in (memory, memory_pos, obj_ptrs, obj_ptrs_pos)), rope_table)
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            mark_dynamic(x, 0)
            if use_ckpt:
                x = checkpoint(layer, x, *inputs)
            else:
                x = layer(x, *inputs)
        return self.norm(x).transpose(0, 1)
