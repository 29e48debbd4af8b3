"""Rules between fields, checked before any work: values that would fail late with an unrelated
error (a resolution the model was not built for, a modulo by zero) or never produce a clip (an
image dataset asked for 8 frames). Each error names the key, what is wrong and what to set.
"""

import os

from .schema import TrainConfig


class ConfigError(ValueError):
    pass


def _require(ok, key, problem):
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _at_least(value, minimum, key, note=""):
    _require(value >= minimum, key, f"must be >= {minimum}, got {value!r}{note}")


def _validate_train(cfg):
    t, c, o = cfg.train, cfg.checkpoint, cfg.optim
    _at_least(t.grad_accum_steps, 1, "train.grad_accum_steps")
    _at_least(t.log_every, 1, "train.log_every")
    _at_least(t.steps_per_epoch, 1, "train.steps_per_epoch")
    _at_least(t.max_nonfinite_steps, 1, "train.max_nonfinite_steps")
    _at_least(t.gc_every, 0, "train.gc_every")
    _at_least(t.flop_scenarios, 1, "train.flop_scenarios")
    _require(t.preempt_grace_s > 0, "train.preempt_grace_s", f"must be > 0 seconds, got {t.preempt_grace_s!r}")
    _require(t.dist_timeout_s > 0, "train.dist_timeout_s", f"must be > 0 seconds, got {t.dist_timeout_s!r}")
    _at_least(t.grad_clip, 0, "train.grad_clip", " (0 = no clipping)")
    _require(0 <= t.ema_decay < 1, "train.ema_decay", f"must be in [0, 1) (0 = off), got {t.ema_decay!r}")
    _at_least(c.every, 0, "checkpoint.every", " (0 = only on preemption and at the end)")
    _at_least(c.keep, 0, "checkpoint.keep", " (0 = keep all)")
    _at_least(o.total_steps, 1, "optim.total_steps")
    _require(
        0 <= o.warmup_steps <= o.total_steps,
        "optim.warmup_steps",
        f"must be between 0 and optim.total_steps ({o.total_steps}), got {o.warmup_steps}",
    )
    default = TrainConfig()
    for name, strategy in (("deepspeed_config", "deepspeed"), ("fsdp_reshard_after_forward", "fsdp")):
        _require(
            t.strategy == strategy or getattr(t, name) == getattr(default, name),
            f"train.{name}",
            f"is only read by train.strategy={strategy} (the strategy is {t.strategy}): remove it or set the strategy",
        )
    if t.strategy == "deepspeed":
        # Relative paths are opened from the working directory, as the engine does.
        _require(
            os.path.isfile(t.deepspeed_config),
            "train.deepspeed_config",
            f"{t.deepspeed_config!r} is not a file (from {os.getcwd()}); ds_configs/ holds zero1/2/3.json",
        )


def _validate_data(cfg):
    d = cfg.data
    _require(d.resolution > 0, "data.resolution", f"must be > 0, got {d.resolution}")
    _require(
        cfg.model.image_size == d.resolution,
        "model.image_size",
        f"{cfg.model.image_size} differs from data.resolution {d.resolution}: the loader makes clips of "
        "data.resolution pixels and the model's position embeddings are built for model.image_size; set both",
    )
    _require(d.resolution % 32 == 0, "data.resolution", f"must be a multiple of 32 (the model's stride), got {d.resolution}")
    _at_least(d.num_workers, 0, "data.num_workers")
    _at_least(d.shuffle_buffer, 0, "data.shuffle_buffer")
    _at_least(d.max_skipped_in_a_row, 1, "data.max_skipped_in_a_row")
    names = [ds.name for ds in d.datasets]
    for i, ds in enumerate(d.datasets):
        key = f"data.datasets[{i}]"
        _require(ds.name and names.count(ds.name) == 1, f"{key}.name", f"must be a unique, non-empty name, got {ds.name!r}")
        key = f"{key} ({ds.name})"
        _require(bool(ds.shards), f"{key}.shards", "is empty; give a glob or brace pattern of shard tars")
        _at_least(ds.batch_size, 1, f"{key}.batch_size")
        _at_least(ds.num_frames, 1, f"{key}.num_frames")
        _require(
            ds.kind == "video" or ds.num_frames == 1,
            f"{key}.num_frames",
            f"an image dataset gives 1-frame clips, got {ds.num_frames}",
        )
        _at_least(ds.max_num_objects, 1, f"{key}.max_num_objects")
        _at_least(ds.weight, 0, f"{key}.weight")
        _require(0 <= ds.reverse_time_prob <= 1, f"{key}.reverse_time_prob", f"must be in [0, 1], got {ds.reverse_time_prob}")
    if d.datasets:
        _require(sum(ds.weight for ds in d.datasets) > 0, "data.datasets[].weight", "all weights are 0: no dataset is ever drawn")


def validate(cfg):
    """Refuse values that cannot work; the error names the key and what is wrong."""
    _validate_train(cfg)
    _validate_data(cfg)
    for key in ("drop_path_rate", "memory_attention_dropout"):
        rate = getattr(cfg.model, key)
        _require(0 <= rate < 1, f"model.{key}", f"must be in [0, 1) (0 = off), got {rate!r}")
    _at_least(cfg.eval.every, 0, "eval.every", " (0 = only at the end)")
    _at_least(cfg.eval.protocol_every, 0, "eval.protocol_every", " (0 = only at the end)")
    _at_least(cfg.eval.protocol_max_videos, 0, "eval.protocol_max_videos", " (0 = all)")
    if cfg.eval.protocol != "none":
        _require(
            bool(cfg.eval.protocol_data or cfg.eval.shards),
            "eval.protocol_data",
            f"eval.protocol={cfg.eval.protocol} needs held-out videos: a DAVIS-style folder here, or eval.shards",
        )
