"""Meta-format checkpoint files: round trip, and clear errors for bad files."""

import os

import pytest
import torch

from sam2_scale.model import CheckpointMismatchError, build_sam2, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_sam2("tiny", image_size=256)


def test_round_trip_is_exact_and_in_meta_format(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "ckpt.pt", step=12)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "step"} and raw["step"] == 12
    torch.manual_seed(1)
    other = build_sam2("tiny", image_size=256)
    load_checkpoint(other, path)
    for name, tensor in tiny.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")], "temp file left behind"


def test_truncated_file_names_the_file(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "ckpt.pt")
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(RuntimeError, match=r"cannot read checkpoint .*truncated\.pt"):
        load_checkpoint(tiny, bad)


def test_not_a_sam2_checkpoint(tiny, tmp_path):
    bad = tmp_path / "plain_state_dict.pt"
    torch.save(tiny.state_dict(), bad)
    with pytest.raises(RuntimeError, match=r"plain_state_dict\.pt is not in SAM 2 format"):
        load_checkpoint(tiny, bad)


def test_pickled_code_is_refused(tmp_path):
    bad = tmp_path / "code.pt"
    torch.save({"model": {}, "hook": CheckpointMismatchError}, bad)  # a class: not plain data
    with pytest.raises(RuntimeError, match=r"cannot read checkpoint .*code\.pt"):
        load_checkpoint(build_sam2("tiny", device="meta"), bad)


def test_mismatch_lists_missing_unexpected_and_shapes(tiny, tmp_path):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    del state["no_obj_ptr"]
    del state["memory_attention.norm.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["obj_ptr_tpos_proj.weight"] = torch.zeros(32, 256)
    path = tmp_path / "mismatch.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tiny, path)
    err = info.value
    assert sorted(err.missing) == ["memory_attention.norm.bias", "no_obj_ptr"]
    assert err.unexpected == ["extra.weight"]
    assert [m[0] for m in err.mismatched] == ["obj_ptr_tpos_proj.weight"]
    text = str(err)
    assert "mismatch.pt" in text and "missing keys (2)" in text and "unexpected keys (1): extra.weight" in text
    assert "obj_ptr_tpos_proj.weight checkpoint (32, 256) vs model (64, 256)" in text


def test_size_mismatch_between_model_sizes(tmp_path):
    path = save_checkpoint(build_sam2("tiny", image_size=256), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_checkpoint(build_sam2("small", image_size=256), path)
