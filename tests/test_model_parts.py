"""Pieces of the model checked against cases derived by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from sam2_scale.model.attention import RoPEAttention
from sam2_scale.model.hiera import MultiScaleBlock, window_partition, window_unpartition
from sam2_scale.model.layers import MLP, DropPath, LayerNorm2d
from sam2_scale.model.position import (
    PositionEmbeddingRandom,
    PositionEmbeddingSine,
    apply_axial_rope,
    axial_rope_table,
    sine_1d,
)
from sam2_scale.model.sam2 import select_closest_cond_frames
from sam2_scale.model.sizes import build_sam2


def test_window_partition_pads_bottom_right_with_zeros_and_round_trips():
    x = torch.arange(1 * 5 * 5 * 2, dtype=torch.float32).reshape(1, 5, 5, 2) + 1
    windows, padded = window_partition(x, 3)
    assert padded == (6, 6)
    assert windows.shape == (4, 3, 3, 2)
    # Window 0 is the top-left 3x3 block.
    assert torch.equal(windows[0], x[0, :3, :3])
    # Window 3 (bottom-right) holds x[3:5, 3:5] and zero padding elsewhere.
    assert torch.equal(windows[3, :2, :2], x[0, 3:5, 3:5])
    assert windows[3, 2].abs().sum() == 0 and windows[3, :, 2].abs().sum() == 0
    assert torch.equal(window_unpartition(windows, 1, 3, padded, (5, 5)), x)


def test_qpool_block_halves_grid_and_widens():
    block = MultiScaleBlock(8, 16, num_heads=2, q_stride=(2, 2), window_size=4).eval()
    y = block(torch.randn(2, 10, 10, 8))
    assert y.shape == (2, 5, 5, 16)


def test_qpool_shortcut_is_pooled_projection_of_normed_input():
    torch.manual_seed(0)
    block = MultiScaleBlock(4, 8, num_heads=1, q_stride=(2, 2), window_size=0).eval()
    x = torch.randn(1, 4, 4, 4)
    # Zero the attention and MLP outputs: only the shortcut remains.
    for lin in (block.attn.proj, block.mlp.layers[1]):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    expected = F.max_pool2d(block.proj(block.norm1(x)).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert torch.allclose(block(x), expected)


def test_sine_position_encoding_matches_formula():
    pe = PositionEmbeddingSine(8)  # 4 channels for y, 4 for x
    pos = pe(torch.zeros(1, 1, 2, 3))[0]
    assert pos.shape == (8, 2, 3)
    two_pi = 2 * math.pi
    for i in range(2):
        for j in range(3):
            y = (i + 1) / (2 + 1e-6) * two_pi
            x = (j + 1) / (3 + 1e-6) * two_pi
            # Frequencies per channel pair: 10000^(0/4) for channels 0,1 and 10000^(2/4) for 2,3.
            want_y = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
            want_x = [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
            assert pos[:, i, j].tolist() == pytest.approx(want_y + want_x, abs=1e-6)


def test_random_fourier_dense_pe_at_cell_centres():
    pe = PositionEmbeddingRandom(2)
    pe.positional_encoding_gaussian_matrix.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    dense = pe((2, 2))  # (4, 2, 2)
    # Cell (row 0, col 1): centre x = 0.75, y = 0.25 -> 2c-1 = (0.5, -0.5).
    a = 2 * math.pi * torch.tensor([0.5 * 1.0, -0.5 * 2.0])
    assert dense[:, 0, 1].tolist() == pytest.approx(torch.cat([a.sin(), a.cos()]).tolist(), abs=1e-6)


def test_sine_1d_layout_is_sin_block_then_cos_block():
    out = sine_1d(torch.tensor([0.5]), dim=8)
    # 4 frequencies 10000^(2*floor(i/2)/4): 1, 1, 100^-1, 100^-1 (pairs share one).
    angles = [0.5, 0.5, 0.005, 0.005]
    want = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    assert out[0].tolist() == pytest.approx(want, abs=1e-6)


def test_axial_rope_gives_relative_position_scores():
    head_dim, side = 8, 4
    table = axial_rope_table(head_dim, side, side)
    q = torch.randn(head_dim)
    k = torch.randn(head_dim)
    grid = lambda v: v.expand(1, 1, side * side, head_dim)  # noqa: E731
    qr = apply_axial_rope(grid(q), table)[0, 0]
    kr = apply_axial_rope(grid(k), table)[0, 0]
    # Rotations keep norms; the score depends only on the offset between tokens.
    assert torch.allclose(qr.norm(dim=-1), q.norm().expand(side * side), atol=1e-5)
    tok = lambda x, y: y * side + x  # noqa: E731
    s1 = qr[tok(2, 1)] @ kr[tok(1, 0)]
    s2 = qr[tok(3, 3)] @ kr[tok(2, 2)]
    assert torch.allclose(s1, s2, atol=1e-5)
    # Pair 0 rotates with x at frequency 1: token (x=1, y=0) turns it by exactly 1 radian.
    c, s = math.cos(1.0), math.sin(1.0)
    q0, q1 = q[0].item(), q[1].item()
    assert qr[tok(1, 0), :2].tolist() == pytest.approx([q0 * c - q1 * s, q0 * s + q1 * c], abs=1e-5)


def test_rope_memory_attention_rotates_frames_and_skips_pointer_tokens():
    torch.manual_seed(0)
    attn = RoPEAttention(16, num_heads=1, kv_in_dim=4).eval()
    q = torch.randn(1, 16, 16)  # a 4x4 grid
    frames = torch.randn(1, 2, 16, 4)  # two memory frames of that grid
    ptrs = torch.randn(1, 3, 4)  # 3 pointer tokens
    out = attn.attend_memory(q, frames, frames, ptrs, ptrs)
    assert out.shape == (1, 16, 16)
    # Pointer tokens are position-free: permuting them leaves the output unchanged.
    flipped = ptrs.flip(1)
    torch.testing.assert_close(attn.attend_memory(q, frames, frames, flipped, flipped), out, atol=1e-6, rtol=0)
    # Frame tokens are not: swapping two grid tokens of a frame changes the output.
    swap = frames.clone()
    swap[:, 0, [0, 5]] = swap[:, 0, [5, 0]]
    assert not torch.allclose(attn.attend_memory(q, swap, swap, ptrs, ptrs), out, atol=1e-4)
    # Both frames are rotated alike: with no pointers, it is attention over their concatenation
    # with every frame rotated by the grid's table.
    table = attn.rope_table_for(16, "cpu")
    k = attn.k_proj(frames).reshape(1, 2, 16, 1, 16).permute(0, 3, 1, 2, 4)
    k_rot = torch.cat([apply_axial_rope(k[:, :, i], table) for i in range(2)], dim=2)
    v = attn.v_proj(frames).reshape(1, 32, 1, 16).transpose(1, 2)
    q_rot = apply_axial_rope(attn.q_proj(q).reshape(1, 16, 1, 16).transpose(1, 2), table)
    want = attn.out_proj(torch.nn.functional.scaled_dot_product_attention(q_rot, k_rot, v).transpose(1, 2).reshape(1, 16, 16))
    no_ptrs = torch.zeros(1, 0, 4)
    torch.testing.assert_close(attn.attend_memory(q, frames, frames, no_ptrs, no_ptrs), want)


def test_layernorm2d_is_channel_layernorm():
    ln = LayerNorm2d(6)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(2, 6, 3, 5)
    want = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), want, atol=1e-5)


def test_mlp_has_no_activation_after_last_layer():
    mlp = MLP(3, 5, 2, num_layers=3)
    x = torch.randn(4, 3)
    want = mlp.layers[2](F.relu(mlp.layers[1](F.relu(mlp.layers[0](x)))))
    assert torch.equal(mlp(x), want)


def test_drop_path_keeps_expectation_and_is_identity_in_eval():
    dp = DropPath(0.25)
    x = torch.ones(20000, 1)
    torch.manual_seed(0)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(dp.eval()(x), x)


def test_select_closest_cond_frames():
    outs = {t: t for t in (0, 3, 8, 20)}
    sel, unsel = select_closest_cond_frames(10, outs, -1)
    assert sel == outs and unsel == {}
    sel, unsel = select_closest_cond_frames(10, outs, 2)
    assert sorted(sel) == [8, 20] and sorted(unsel) == [0, 3]
    sel, _ = select_closest_cond_frames(10, outs, 3)
    assert sorted(sel) == [3, 8, 20]


def test_memory_slots_follow_stride():
    model = build_sam2("tiny", device="meta")
    model.train()
    assert model._memory_frame_indices(10, False) == [(1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]
    model.eval()
    model.memory_temporal_stride_for_eval = 3
    # Previous frame, then every 3rd frame back from the last multiple of 3 at or before frame 8.
    assert model._memory_frame_indices(10, False) == [(1, -6), (2, -3), (3, 0), (4, 3), (5, 6), (6, 9)]
    assert model._memory_frame_indices(10, True)[-1] == (6, 11)
