"""The model's parameters are exactly those of the released checkpoints."""

import pytest
import torch

from sam2_scale.model import NUM_PARAMETERS, build_sam2

SIZES = ["tiny", "small", "base_plus", "large"]


@pytest.mark.parametrize("size", SIZES)
def test_keys_shapes_and_order_match_release(size, reference_state_dicts):
    ref = reference_state_dicts[size]
    model = build_sam2(size, device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(ref["state_dict"]), "state-dict keys or their order differ"
    assert ours == ref["state_dict"]
    assert len(ours) == ref["num_state_dict_entries"]


@pytest.mark.parametrize("size", SIZES)
def test_parameter_counts(size, reference_state_dicts):
    model = build_sam2(size, device="meta")
    total = sum(p.numel() for p in model.parameters())
    assert total == NUM_PARAMETERS[size] == reference_state_dicts[size]["num_parameters"]
    for component, count in reference_state_dicts[size]["num_parameters_by_component"].items():
        if component == "SAM2Base top-level tensors":
            got = sum(p.numel() for p in model.parameters(recurse=False))
        else:
            got = sum(p.numel() for p in model.get_submodule(component).parameters())
        assert got == count, component


def test_only_buffer_is_the_prompt_gaussian_matrix(reference_state_dicts):
    model = build_sam2("tiny", device="meta")
    buffers = [name for name, _ in model.named_buffers()]
    assert buffers == reference_state_dicts["tiny"]["buffers"]


@pytest.mark.parametrize("image_size", [256, 512, 1024])
def test_state_dict_does_not_depend_on_image_size(image_size):
    base = {k: v.shape for k, v in build_sam2("tiny", device="meta").state_dict().items()}
    other = {k: v.shape for k, v in build_sam2("tiny", image_size=image_size, device="meta").state_dict().items()}
    assert base == other


def test_bad_size_and_image_size_are_rejected():
    with pytest.raises(ValueError, match="unknown SAM 2.1 size 'huge'"):
        build_sam2("huge", device="meta")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_sam2("tiny", image_size=300, device="meta")


def test_training_drop_path_is_linear_in_depth():
    model = build_sam2("tiny", drop_path_rate=0.1, device="meta")
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.image_encoder.trunk.blocks]
    expected = torch.linspace(0, 0.1, len(rates)).tolist()
    assert rates == pytest.approx(expected)
