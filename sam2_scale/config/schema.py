"""Every section of a training config, with each field's type, default and meaning.

A YAML recipe (configs/*.yaml) sets any of these; `python -m sam2_scale.train --print-config`
prints them resolved, with the comment of each field beside it. Fields with a fixed set of
values are `Literal`s: the loader refuses anything else and lists the choices. Defaults are the
SAM 2.1 release's values where it has one. This module imports nothing of the package, so every
layer can take its section from here.
"""

import typing
from dataclasses import dataclass, field
from typing import Literal

ModelSize = Literal["tiny", "small", "base_plus", "large"]
# Parts of the model whose activations can be recomputed in backward instead of kept: the big,
# FLOP-heavy ones (Hiera blocks, memory-attention layers) and the launch-bound ones (each pass
# of the SAM heads, of the memory encoder), separately.
CheckpointRegion = Literal["hiera", "memory_attention", "heads", "memory_encoder"]
AttentionBackend = Literal["flash", "efficient", "cudnn", "math"]  # torch.nn.attention.SDPBackend members
Strategy = Literal["ddp", "deepspeed", "fsdp"]

CHECKPOINT_REGIONS = typing.get_args(CheckpointRegion)
ATTENTION_BACKENDS = typing.get_args(AttentionBackend)
STRATEGIES = typing.get_args(Strategy)


@dataclass
class ModelConfig:
    size: ModelSize = "tiny"  # one of the four released SAM 2.1 sizes
    image_size: int = 1024  # input side in pixels; must equal data.resolution
    drop_path_rate: float = 0.1  # stochastic depth of the Hiera trunk
    memory_attention_dropout: float = 0.1  # dropout of the memory-attention layers (0 with drop_path_rate 0: no random draw)
    # Regions recomputed in backward instead of keeping their activations ([] = none).
    activation_checkpointing: list[CheckpointRegion] = field(default_factory=list)
    # Attention kernels in order of preference ([] = PyTorch's choice); benchmarks/gpu_throughput.py times them.
    attention_backends: list[AttentionBackend] = field(default_factory=list)
    init_checkpoint: str = ""  # a Meta-format .pt to start from ("" = random init)


@dataclass
class PromptConfig:
    """Prompt simulation; defaults are SAM 2.1's (sam2.1_training_hparams.json, prompt_simulation_train)."""

    prob_to_use_pt_input: float = 0.5  # else GT masks prompt the initial frames
    prob_to_use_box_input: float = 0.5  # per initial frame, given point input: P(box) = 0.25
    num_init_cond_frames: int = 2  # frames prompted before the unroll
    rand_init_cond_frames: bool = True  # uniform in 1..num_init_cond_frames
    num_frames_to_correct: int = 2  # frames that receive correction clicks
    rand_frames_to_correct: bool = True  # uniform in #init..num_frames_to_correct
    num_correction_pt_per_frame: int = 7  # correction clicks per corrected frame
    prob_to_sample_from_gt: float = 0.1  # per correction click: sample as if nothing was predicted
    add_all_frames_to_correct_as_cond: bool = True  # corrected frames become conditioning frames
    box_noise: float = 0.1  # box corner jitter, as a fraction of the box side
    box_noise_bound: float = 20.0  # box corner jitter bound, in pixels


@dataclass
class LossConfig:
    weight_mask: float = 20.0  # focal loss on the best mask
    weight_dice: float = 1.0  # dice loss on the best mask
    weight_iou: float = 1.0  # predicted-IoU regression
    weight_class: float = 1.0  # object-score BCE
    focal_alpha: float = 0.25  # focal loss's positive weight
    focal_gamma: float = 2.0  # focal loss's focusing exponent
    supervise_all_iou: bool = True  # IoU loss on all 3 masks, not only the best
    iou_use_l1_loss: bool = True  # L1 (else squared error) on the predicted IoU


@dataclass
class OptimConfig:
    base_lr: float = 5e-6  # peak learning rate outside the image encoder
    vision_lr: float = 3e-6  # peak learning rate of image_encoder.* (trunk and neck)
    min_lr_ratio: float = 0.1  # cosine ends at peak * ratio (5e-6 -> 5e-7 in the reference)
    weight_decay: float = 0.1  # AdamW decay (biases and LayerNorm weights exempt)
    layer_decay: float = 0.9  # Hiera block i's lr scale is decay^(blocks - i)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    schedule: Literal["cosine", "constant", "rsqrt"] = "cosine"  # shape after warmup
    warmup_steps: int = 0  # linear warmup from 0, in optimizer steps; at most total_steps
    total_steps: int = 1000  # optimizer steps of the run (the schedule's length)
    rsqrt_timescale: int = 1000  # rsqrt: lr ∝ 1/sqrt(1 + step/timescale) after warmup
    trainable: list[str] = field(default_factory=list)  # name patterns; if set, everything else is frozen
    frozen: list[str] = field(default_factory=list)  # name patterns frozen (applied after `trainable`)


@dataclass
class AugmentConfig:
    hflip_prob: float = 0.5  # horizontal flip, one draw per clip
    degrees: float = 25.0  # rotation bound of the clip's affine
    shear: float = 20.0  # x-shear bound of the clip's affine, degrees
    brightness: float = 0.1  # clip-consistent jitter
    contrast: float = 0.03  # clip-consistent jitter
    saturation: float = 0.03  # clip-consistent jitter
    grayscale_prob: float = 0.05  # whole clip to grayscale
    frame_brightness: float = 0.1  # per-frame jitter
    frame_contrast: float = 0.05  # per-frame jitter
    frame_saturation: float = 0.05  # per-frame jitter
    enabled: bool = True  # False: resize + normalise only (evaluation)


@dataclass
class DatasetConfig:
    name: str = "sav"  # unique; names the dataset in logs, skip counts and checkpoints
    shards: str = ""  # glob or brace pattern of shard tars, e.g. /data/sav/shard-{000000..000099}.tar
    kind: Literal["video", "image"] = "video"  # what its shards hold (make_shards.py sav/davis vs sa1b)
    batch_size: int = 1  # clips per rank per micro-batch when a step draws this dataset
    weight: float = 1.0  # relative probability of a step drawing this dataset
    num_frames: int = 8  # frames per clip (1 for image datasets)
    max_num_objects: int = 3  # objects tracked per clip, drawn at random when there are more
    reverse_time_prob: float = 0.0  # probability of playing a clip backwards


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)  # the mixture; one dataset per step
    resolution: int = 1024  # square clip side in pixels; must equal model.image_size
    num_workers: int = 2  # DataLoader worker processes per rank
    shuffle_buffer: int = 64  # samples shuffled in memory per worker
    seed: int = 0  # shard draws and clip sampling
    resampled: bool = True  # infinite, i.i.d. shard draws (training); False: each shard once per epoch
    max_skipped_in_a_row: int = 1000  # inputs skipped without one clip before a dataset is declared unusable
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the reference's clip augmentations


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"  # config.yaml, metrics.jsonl, checkpoints/, wandb/
    strategy: Strategy = "ddp"  # how model and optimizer state are split over ranks
    deepspeed_config: str = "ds_configs/zero2.json"  # ZeRO stage and communication (strategy deepspeed only)
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16: autocast (bf16 matmuls) over fp32 weights, every strategy
    grad_accum_steps: int = 1  # global batch = batch_size x grad_accum_steps x world size
    # Resuming on another world size recomputes grad_accum_steps to keep the global batch and
    # refuses when it cannot; true trains on with the configured grad_accum_steps instead.
    allow_global_batch_change: bool = False
    grad_clip: float = 0.1  # max total grad norm (0 = no clipping)
    max_nonfinite_steps: int = 10  # stop after this many skipped (NaN/inf) steps in a row
    ema_decay: float = 0.0  # EMA of the weights (0 = off), e.g. 0.9999
    # torch.compile regions: Hiera blocks, memory-attention layers, SAM heads, memory encoder, loss.
    compile: bool = False
    # inductor generates kernels; aot_eager and eager only trace (for debugging).
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    fsdp_reshard_after_forward: bool = True  # FSDP: free gathered weights after forward (ZeRO-3-like)
    seed: int = 0  # weights init, dropout / drop-path, prompt simulation
    steps_per_epoch: int = 1000  # the data loader reseeds its shard draws every epoch
    log_every: int = 10  # optimizer steps between metric lines (metrics.jsonl, W&B)
    peak_tflops: float = 0.0  # per device, for MFU (0 = from the built-in table; none on CPU)
    flop_scenarios: int = 16  # prompt scenarios averaged by the MFU's FLOP count (counted once, at start)
    preempt_grace_s: float = 300.0  # after SIGUSR1/SIGTERM, force exit if the save has not finished
    # A collective that waits longer than this fails the job (NCCL's watchdog, gloo): a hung rank
    # ends the allocation instead of holding it to its time limit.
    dist_timeout_s: float = 1800.0
    # Optimizer steps between Python garbage collections, at the same step on every rank, with
    # automatic collection off in between (a rank collecting on its own stalls the others); 0 = automatic.
    gc_every: int = 50


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints (0 = only on preemption and at the end)
    keep: int = 3  # newest complete checkpoints kept (0 = all)
    at_end: bool = True  # also save at the last step (false: runs that only measure)
    dir: str = ""  # default: <train.out_dir>/checkpoints


@dataclass
class WandbConfig:
    mode: Literal["online", "offline", "disabled"] = "offline"  # offline: upload later with `wandb sync`
    project: str = "sam2_scale"  # W&B project
    entity: str = ""  # W&B team or user ("" = your default)
    name: str = ""  # run name (default: the name of train.out_dir)


@dataclass
class EvalConfig:
    """What the trainer evaluates, and when: the clip proxy (eval/clip_proxy.py, logged as
    eval/clip_J&F in [0, 1]) and a full-video protocol on a few videos (eval/full_video.py,
    logged as eval/<protocol>_J&F x 100, as published)."""

    shards: str = ""  # glob/brace pattern of held-out video shards ("" = no clip proxy)
    every: int = 0  # evaluate before training and every N optimizer steps (0 = only at the end)
    num_frames: int = 8  # frames per clip evaluated
    max_num_objects: int = 3  # objects per clip evaluated
    max_videos: int = 0  # held-out videos evaluated (0 = all)
    resolution: int = 0  # scoring resolution; 0 = the model's image_size
    protocol: Literal["none", "sav", "davis", "mose"] = "none"  # full-video protocol, or none
    protocol_every: int = 0  # optimizer steps between full-protocol runs (0 = only at the end)
    protocol_data: str = ""  # a DAVIS-style folder; "" = the videos of `shards`
    protocol_max_videos: int = 8  # videos scored per run (0 = all)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)  # which SAM 2.1 and how it runs
    prompts: PromptConfig = field(default_factory=PromptConfig)  # prompt simulation
    loss: LossConfig = field(default_factory=LossConfig)  # the multi-step loss
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW groups and the schedule
    data: DataConfig = field(default_factory=DataConfig)  # datasets, mixing and augmentation
    train: TrainConfig = field(default_factory=TrainConfig)  # strategy, precision, batch, logging
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # when and where to save
    wandb: WandbConfig = field(default_factory=WandbConfig)  # Weights & Biases logging
    eval: EvalConfig = field(default_factory=EvalConfig)  # J&F during training
