"""YAML configs: strict validation, overrides, and the shipped recipes."""

from pathlib import Path

import pytest

from sam2_scale.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "optim:\n  base_lr: 1.0e-4\n  bse_lr: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: optim: unknown key\(s\) bse_lr"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) optimizer"):
        load_config(write(tmp_path, "optimizer: {}\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.image_size: expected int, got '512'"):
        load_config(write(tmp_path, "model:\n  image_size: '512'\n"))
    with pytest.raises(ConfigError, match=r"prompts\.rand_init_cond_frames: expected bool"):
        load_config(write(tmp_path, "prompts:\n  rand_init_cond_frames: 1\n"))
    with pytest.raises(ConfigError, match=r"optim\.base_lr: expected a number"):
        load_config(write(tmp_path, "optim:\n  base_lr: fast\n"))


def test_ints_are_accepted_for_floats_and_overrides_apply(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  base_lr: 1\n"), ["optim.vision_lr=2.0e-4", "model.size=large"])
    assert cfg.optim.base_lr == 1.0 and isinstance(cfg.optim.base_lr, float)
    # PyYAML reads exponents without a dot as strings; float fields take them as numbers.
    assert load_config(None, ["optim.base_lr=1e-4"]).optim.base_lr == 1e-4
    assert cfg.optim.vision_lr == 2e-4 and cfg.model.size == "large"
    with pytest.raises(ConfigError, match="optim.warmup: unknown|unknown key\\(s\\) warmup"):
        load_config(None, ["optim.warmup=3"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["optim.base_lr"])


def test_bad_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML"):
        load_config(write(tmp_path, "optim: [\n"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model.size in ("tiny", "small", "base_plus", "large")


def test_mose_recipe_has_the_released_numbers(reference_hparams):
    cfg = load_config(Path(__file__).parents[1] / "configs" / "mose_finetune_base_plus.yaml")
    scratch = reference_hparams["scratch"]
    assert (cfg.optim.base_lr, cfg.optim.vision_lr) == (scratch["base_lr"], scratch["vision_lr"])
    assert cfg.optim.layer_decay == reference_hparams["layer_decay"]["value"]
    assert cfg.optim.weight_decay == reference_hparams["weight_decay"]["default"]
    assert cfg.model.drop_path_rate == reference_hparams["drop_path_rate"]["value"]
    assert cfg.model.memory_attention_dropout == reference_hparams["dropout"]["memory_attention_layers"]
    assert cfg.model.size == "base_plus" and cfg.model.image_size == scratch["resolution"]


def test_data_section_is_typed_down_to_each_dataset(tmp_path):
    text = (
        "model:\n  image_size: 512\ndata:\n  resolution: 512\n  datasets:\n"
        "    - {name: sa1b, shards: /s/sa1b-*.tar, kind: image, batch_size: 4, num_frames: 1}\n"
        "    - {name: sav, shards: /s/sav-*.tar, batch_size: 1, weight: 2}\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert [d.name for d in cfg.data.datasets] == ["sa1b", "sav"]
    assert cfg.data.datasets[1].weight == 2.0 and cfg.data.datasets[1].num_frames == 8
    with pytest.raises(ConfigError, match=r"data\.datasets\[0\]: unknown key\(s\) batchsize"):
        load_config(write(tmp_path, "data:\n  datasets:\n    - {name: a, batchsize: 2}\n"))


DATASET = "{name: sav, shards: /s/sav-*.tar, kind: video, batch_size: 1, num_frames: 8}"


def datasets(*replacements):
    """A `data.datasets=[...]` override of DATASET with `old -> new` text replacements."""
    text = DATASET
    for old, new in replacements:
        text = text.replace(old, new)
    return f"data.datasets=[{text}]"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.grad_accum_steps=0"], r"train\.grad_accum_steps: must be >= 1, got 0"),
        (["train.log_every=0"], r"train\.log_every: must be >= 1, got 0"),
        (["train.steps_per_epoch=0"], r"train\.steps_per_epoch: must be >= 1, got 0"),
        (["checkpoint.every=-1"], r"checkpoint\.every: must be >= 0, got -1"),
        (["optim.total_steps=100", "optim.warmup_steps=101"], r"optim\.warmup_steps: must be between 0 and optim\.total_steps"),
        (["model.image_size=512"], r"model\.image_size: 512 differs from data\.resolution 1024"),
        (["model.image_size=0", "data.resolution=0"], r"data\.resolution: must be > 0, got 0"),
        (
            ["train.strategy=deepspeed", "train.deepspeed_config=ds_configs/zero9.json"],
            r"train\.deepspeed_config: 'ds_configs/zero9\.json' is not a file",
        ),
        ([datasets(("video", "vidoe"))], r"data\.datasets\[0\]\.kind: 'vidoe' is not one of 'video', 'image'"),
        (["model.size=huge"], r"model\.size: 'huge' is not one of 'tiny', 'small', 'base_plus', 'large'"),
        (["train.strategy=zero"], r"train\.strategy: 'zero' is not one of 'ddp', 'deepspeed', 'fsdp'"),
        (["model.activation_checkpointing=[hiera, neck]"], r"model\.activation_checkpointing\[1\]: 'neck' is not one of"),
        (["train.deepspeed_config=ds_configs/zero3.json"], r"train\.deepspeed_config: is only read by train\.strategy=deepspeed"),
        (["train.strategy=ddp", "train.fsdp_reshard_after_forward=false"], r"train\.fsdp_reshard_after_forward: is only read by"),
        ([datasets(("num_frames: 8", "num_frames: 0"))], r"data\.datasets\[0\] \(sav\)\.num_frames: must be >= 1"),
        ([datasets(("video", "image"))], r"\(sav\)\.num_frames: an image dataset gives 1-frame clips, got 8"),
        ([datasets(("batch_size: 1", "batch_size: 0"))], r"\(sav\)\.batch_size: must be >= 1"),
        ([f"data.datasets=[{DATASET}, {DATASET}]"], r"data\.datasets\[0\]\.name: must be a unique"),
        (["optim.betas=[1, 2, 3, x]"], r"optim\.betas: expected 2 values, got 4"),
        (["optim.betas=[0.9, x]"], r"optim\.betas\[1\]: expected a number, got 'x'"),
        (["data.datasets.0.num_frames=4"], r"override data\.datasets\.0\.num_frames: the config file lists no datasets"),
        (["train.max_nonfinite_steps=0"], r"train\.max_nonfinite_steps: must be >= 1, got 0"),
        (["train.preempt_grace_s=0"], r"train\.preempt_grace_s: must be > 0 seconds"),
        (["train.dist_timeout_s=0"], r"train\.dist_timeout_s: must be > 0 seconds"),
        (["train.gc_every=-1"], r"train\.gc_every: must be >= 0"),
        (["train.flop_scenarios=0"], r"train\.flop_scenarios: must be >= 1"),
        (["model.memory_attention_dropout=1"], r"model\.memory_attention_dropout: must be in \[0, 1\) \(0 = off\)"),
        (["train.grad_clip=-1"], r"train\.grad_clip: must be >= 0, got -1\.0 \(0 = no clipping\)"),
        (["train.ema_decay=1"], r"train\.ema_decay: must be in \[0, 1\) \(0 = off\)"),
        (["checkpoint.keep=-1"], r"checkpoint\.keep: must be >= 0, got -1 \(0 = keep all\)"),
        (["optim.total_steps=0", "optim.warmup_steps=0"], r"optim\.total_steps: must be >= 1, got 0"),
        (["model.image_size=100", "data.resolution=100"], r"data\.resolution: must be a multiple of 32"),
        (["data.num_workers=-1"], r"data\.num_workers: must be >= 0"),
        (["data.shuffle_buffer=-1"], r"data\.shuffle_buffer: must be >= 0"),
        (["data.max_skipped_in_a_row=0"], r"data\.max_skipped_in_a_row: must be >= 1"),
        ([datasets(("/s/sav-*.tar", "''"))], r"\(sav\)\.shards: is empty; give a glob or brace pattern"),
        ([datasets(("num_frames: 8", "num_frames: 8, max_num_objects: 0"))], r"\(sav\)\.max_num_objects: must be >= 1"),
        ([datasets(("num_frames: 8", "num_frames: 8, weight: -1"))], r"\(sav\)\.weight: must be >= 0"),
        ([datasets(("num_frames: 8", "num_frames: 8, weight: 0"))], r"data\.datasets\[\]\.weight: all weights are 0"),
        (
            [datasets(("num_frames: 8", "num_frames: 8, reverse_time_prob: 2"))],
            r"\(sav\)\.reverse_time_prob: must be in \[0, 1\]",
        ),
        (["eval.every=-1"], r"eval\.every: must be >= 0, got -1 \(0 = only at the end\)"),
        (["eval.protocol_every=-1"], r"eval\.protocol_every: must be >= 0"),
        (["eval.protocol_max_videos=-1"], r"eval\.protocol_max_videos: must be >= 0, got -1 \(0 = all\)"),
        (["eval.protocol=davis"], r"eval\.protocol_data: eval\.protocol=davis needs held-out videos"),
    ],
)
def test_values_that_cannot_work_are_refused_naming_the_key(overrides, message):
    """Each of these used to fail late (after the model was built) with an unrelated error, hang, or
    be accepted: a KeyError for accumulation 0, a ZeroDivisionError for log_every 0, a checkpoint
    every step for every=-1, a dataset that can never give a clip."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_valid_config_still_loads_with_matching_sizes():
    cfg = load_config(None, ["model.image_size=256", "data.resolution=256", datasets(), "checkpoint.every=0"])
    assert cfg.model.image_size == cfg.data.resolution == 256 and cfg.checkpoint.every == 0


def test_list_items_can_be_overridden_by_index():
    path = CONFIGS[0].parent / "sav_sa1b_full.yaml"
    cfg = load_config(path, ["data.datasets.0.num_frames=4", "data.datasets.1.weight=0.5", "optim.betas=[0.8, 0.95]"])
    (sav, sa1b), default = cfg.data.datasets, load_config(path).data.datasets
    assert (sav.num_frames, sa1b.weight, cfg.optim.betas) == (4, 0.5, (0.8, 0.95))
    assert (sav.weight, sa1b.num_frames) == (default[0].weight, default[1].num_frames)
    with pytest.raises(ConfigError, match=r"override data\.datasets\.2\.weight: '2' is not an index of a list of 2 item"):
        load_config(path, ["data.datasets.2.weight=1"])


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path):
    import subprocess
    import sys

    import yaml

    root = CONFIGS[0].parents[1]
    args = [
        "--config",
        "configs/sav_sa1b_full.yaml",
        "--print-config",
        "data.datasets.1.batch_size=2",
        f"train.out_dir={tmp_path}/run",
    ]
    result = subprocess.run([sys.executable, "-m", "sam2_scale.train", *args], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["data"]["datasets"][1]["batch_size"] == 2 and printed["train"]["strategy"] == "deepspeed"
    assert (
        load_config(root / "configs/sav_sa1b_full.yaml", ["data.datasets.1.batch_size=2"]).optim.total_steps
        == printed["optim"]["total_steps"]
    )
    assert not (tmp_path / "run").exists(), "nothing was started"
    bad = subprocess.run(
        [sys.executable, "-m", "sam2_scale.train", "--print-config", "train.log_every=0"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "train.log_every: must be >= 1, got 0" in bad.stderr


def sections(cls=None):
    """Every dataclass of the schema, from Config down."""
    import dataclasses
    import typing

    from sam2_scale.config import Config

    cls = cls or Config
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for tp in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(tp) and tp not in found:
                found += [c for c in sections(tp) if c not in found]
    return found


def test_every_field_of_the_schema_says_what_it_is():
    import dataclasses

    from sam2_scale.config.loading import field_docs

    undocumented = [
        f"{cls.__name__}.{f.name}" for cls in sections() for f in dataclasses.fields(cls) if not field_docs(cls)[f.name]
    ]
    assert len(sections()) == 12 and not undocumented, undocumented


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dumped_config_loads_back_equal_with_a_comment_on_every_field(path, tmp_path):
    from sam2_scale.config import dump

    cfg = load_config(path)
    text = dump(cfg)
    assert load_config(write(tmp_path, text)) == cfg
    keyed = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all("  # " in line for line in keyed), [line for line in keyed if "  # " not in line][:3]
