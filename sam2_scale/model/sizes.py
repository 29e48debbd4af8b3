"""The four released SAM 2.1 sizes and `build_sam2`."""

from dataclasses import dataclass

import torch

from ..config.schema import CHECKPOINT_REGIONS
from .hiera import Hiera
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .neck import FpnNeck, ImageEncoder
from .sam2 import SAM2Base


@dataclass(frozen=True)
class TrunkSpec:
    embed_dim: int
    num_heads: int
    stages: tuple
    global_att_blocks: tuple
    window_spec: tuple = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple = (14, 14)


# From the sam2.1_hiera_{t,s,b+,l}.yaml model configs.
SIZES = {
    "tiny": TrunkSpec(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": TrunkSpec(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": TrunkSpec(112, 2, (2, 3, 16, 3), (12, 16, 20)),
    "large": TrunkSpec(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)),
}


# SAM2Base's top-level modules, the groups of per-module gradient norms; other parameters
# (memory embeddings, tokens) are "other".
TOP_LEVEL_MODULES = (
    "image_encoder",
    "memory_attention",
    "memory_encoder",
    "sam_prompt_encoder",
    "sam_mask_decoder",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",
)


def top_level_module(param_name):
    top = param_name.split(".", 1)[0]
    return top if top in TOP_LEVEL_MODULES else "other"


def repeated_blocks(model):
    """The blocks that repeat (Hiera blocks, memory-attention layers): where the activations are,
    and the units that FSDP shards one by one."""
    return list(model.image_encoder.trunk.blocks) + list(model.memory_attention.layers)


# Parameter counts of the released models (all four match Meta's SAM2Base exactly).
NUM_PARAMETERS = {"tiny": 38_962_498, "small": 46_060_354, "base_plus": 80_850_178, "large": 224_446_642}


def build_sam2(
    size,
    image_size=1024,
    drop_path_rate=0.0,
    memory_attention_dropout=0.1,
    activation_checkpointing=False,
    device=None,
    **model_kwargs,
):
    """Build a SAM 2.1 model of `size` ("tiny", "small", "base_plus", "large").

    image_size: any multiple of 32 (1024 for the released models; smaller for tests).
    drop_path_rate: stochastic depth of the trunk (0.1 in the training recipe, 0 for inference).
    memory_attention_dropout: dropout of the memory-attention layers (0.1, as released; only active
        in train mode).
    activation_checkpointing: regions of CHECKPOINT_REGIONS recomputed in backward (True: the Hiera
        blocks and memory-attention layers).
    device: e.g. "meta" to build without allocating weights.
    model_kwargs: inference options of SAM2Base (max_cond_frames_in_attn, ...).
    """
    if size not in SIZES:
        raise ValueError(f"unknown SAM 2.1 size {size!r}; choose from {sorted(SIZES)}")
    if image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
    spec = SIZES[size]
    with torch.device(device) if device is not None else _nullcontext():
        trunk = Hiera(
            embed_dim=spec.embed_dim,
            num_heads=spec.num_heads,
            stages=spec.stages,
            global_att_blocks=spec.global_att_blocks,
            window_spec=spec.window_spec,
            window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
            drop_path_rate=drop_path_rate,
        )
        neck = FpnNeck(d_model=256, backbone_channel_list=trunk.channel_list)
        model = SAM2Base(
            image_encoder=ImageEncoder(trunk, neck, scalp=1),
            memory_attention=MemoryAttention(d_model=256, num_layers=4, dropout=memory_attention_dropout),
            memory_encoder=MemoryEncoder(out_dim=64),
            image_size=image_size,
            **model_kwargs,
        )
    model.size_name = size
    set_activation_checkpointing(model, activation_checkpointing)
    return model


def checkpoint_regions(setting):
    """The regions a setting names: a list of CHECKPOINT_REGIONS names, or a bool (True: the
    Hiera blocks and memory-attention layers, the memory-heavy parts; False: none)."""
    if setting is True:
        return ("hiera", "memory_attention")
    if setting is False or setting is None:
        return ()
    unknown = sorted(set(setting) - set(CHECKPOINT_REGIONS))
    if unknown:
        raise ValueError(f"unknown activation-checkpointing region(s) {unknown}; choose from {list(CHECKPOINT_REGIONS)}")
    return tuple(setting)


def set_activation_checkpointing(model, setting):
    """Recompute the regions `setting` names (see `checkpoint_regions`) in backward; others keep
    their activations."""
    regions = checkpoint_regions(setting)
    model.image_encoder.trunk.activation_checkpointing = "hiera" in regions
    model.memory_attention.activation_checkpointing = "memory_attention" in regions
    model.checkpoint_heads = "heads" in regions
    model.checkpoint_memory_encoder = "memory_encoder" in regions


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
