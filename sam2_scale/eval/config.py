"""What the trainer evaluates, and when (the `eval:` section of a training config)."""

from dataclasses import dataclass
from typing import Literal


@dataclass
class EvalConfig:
    # The clip proxy (clip_proxy.py), logged as eval/clip_J&F, eval/clip_J, eval/clip_F in [0, 1].
    shards: str = ""  # glob/brace pattern of held-out video shards ("" = no clip proxy)
    every: int = 0  # evaluate before training and every N optimizer steps (0 = only at the end)
    num_frames: int = 8  # frames per clip evaluated
    max_num_objects: int = 3
    max_videos: int = 0  # 0 = all
    resolution: int = 0  # scoring resolution; 0 = the model's image_size
    # A full-video protocol (full_video.py) on a small held-out set, logged as eval/<protocol>_J&F,
    # eval/<protocol>_J, eval/<protocol>_F, x 100 as published.
    protocol: Literal["none", "sav", "davis", "mose"] = "none"
    protocol_every: int = 0  # optimizer steps between full-protocol runs (0 = only at the end)
    protocol_data: str = ""  # a DAVIS-style folder; "" = the videos of `shards`
    protocol_max_videos: int = 8  # videos scored per run (0 = all)
