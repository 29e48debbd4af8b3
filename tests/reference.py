"""Meta's own SAM 2.1 implementation (PyPI `sam2==1.1.0`) as a test oracle.

Only tests import this. The oracle is installed by the Makefile's test setup; if it is missing
or broken, the tests that use it fail at import, loudly, rather than being skipped.
"""

import torch
from sam2.build_sam import build_sam2 as meta_build_sam2
from sam2.modeling.sam2_base import SAM2Base as MetaSAM2Base  # noqa: F401  (fails early if deps are missing)

META_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


# Our build_sam2 options -> the reference's hydra overrides.
_OVERRIDES = {
    "drop_path_rate": "model.image_encoder.trunk.drop_path_rate",
    "max_cond_frames_in_attn": "model.max_cond_frames_in_attn",
    "memory_temporal_stride_for_eval": "model.memory_temporal_stride_for_eval",
    "binarize_mask_from_pts_for_mem_enc": "model.binarize_mask_from_pts_for_mem_enc",
    "non_overlap_masks_for_mem_enc": "model.non_overlap_masks_for_mem_enc",
    "dynamic_multimask_via_stability": "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability",
}


def build_meta_sam2(size, image_size, overrides=None):
    extra = [f"++model.image_size={image_size}"]
    for key, value in (overrides or {}).items():
        extra.append(f"++{_OVERRIDES[key]}={str(value).lower() if isinstance(value, bool) else value}")
    return meta_build_sam2(
        META_CONFIGS[size], ckpt_path=None, device="cpu", mode="eval", hydra_overrides_extra=extra, apply_postprocessing=False
    )


@torch.no_grad()
def randomize_(model, seed=0, scale=0.05):
    """Perturb every parameter so that no branch hides behind a zero or identity init
    (layer-scale gammas start at 1e-6, position embeddings at 0)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    # Random weights put the object score just below 0, which would hide every mask behind
    # the "object absent" fill; shift it so that both outcomes occur.
    model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(0.2)
    return model
