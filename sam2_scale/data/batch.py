"""The one input format of the training objective."""

from dataclasses import dataclass, field

import torch

from .transforms import normalize_frames


@dataclass
class Batch:
    """A batch of B clips of T frames with O objects in total.

    frames:  float (T, B, 3, H, W), normalised images.
    masks:   bool (T, O, H, W), ground truth per object and frame (all-zero where absent).
    obj_to_frame_idx: long (T, O, 2), per object (t, clip index in the batch).
    Images (SA-1B) are clips with T = 1.
    """

    frames: torch.Tensor
    masks: torch.Tensor
    obj_to_frame_idx: torch.Tensor
    # Per clip: "sources" (video / image ids), "frame_indices"; per object: "object_ids";
    # "dataset" name and "skipped" (bad samples skipped upstream since the previous batch).
    metadata: dict = field(default_factory=dict)

    @property
    def num_frames(self):
        return self.frames.shape[0]

    @property
    def num_objects(self):
        return self.masks.shape[1]

    @property
    def flat_frames(self):
        """(B*T, 3, H, W), clip-major: clip b's frame t is row b*T + t."""
        t, b = self.frames.shape[:2]
        return self.frames.transpose(0, 1).reshape(b * t, *self.frames.shape[2:])

    @property
    def flat_obj_to_img_idx(self):
        """(T, O): the row of `flat_frames` each object's features come from."""
        t_idx, clip_idx = self.obj_to_frame_idx.unbind(-1)
        return clip_idx * self.num_frames + t_idx

    def to(self, device):
        return Batch(self.frames.to(device), self.masks.to(device), self.obj_to_frame_idx.to(device), self.metadata)

    @staticmethod
    def from_clip(frames, masks):
        """One clip: frames (T, 3, H, W), masks (T, O, H, W)."""
        t, o = masks.shape[:2]
        idx = torch.stack(torch.meshgrid(torch.arange(t), torch.zeros(o, dtype=torch.long), indexing="ij"), dim=-1)
        return Batch(frames.unsqueeze(1), masks.bool(), idx)


def collate_clips(clips, dataset=""):
    """Clips of equal length (dicts from `sam2_scale.data.clips`, uint8 frames) -> one Batch of
    normalised frames. Objects of all clips are concatenated; `obj_to_frame_idx` says which
    clip each one belongs to."""
    lengths = {c["frames"].shape[0] for c in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of different lengths in one batch: {sorted(lengths)}")
    (t,) = lengths
    frames = normalize_frames(torch.stack([c["frames"] for c in clips], dim=1))  # (T, B, 3, H, W)
    masks = torch.cat([c["masks"] for c in clips], dim=1)  # (T, O, H, W)
    clip_of_object = torch.cat([torch.full((c["masks"].shape[1],), b, dtype=torch.long) for b, c in enumerate(clips)])
    obj_to_frame_idx = torch.stack(
        [torch.arange(t)[:, None].expand(t, len(clip_of_object)), clip_of_object[None].expand(t, -1)], dim=-1
    )
    metadata = {
        "dataset": dataset,
        "sources": [c["source"] for c in clips],
        "frame_indices": [c["frame_indices"] for c in clips],
        "object_ids": [i for c in clips for i in c["object_ids"]],
        "skipped": sum(c.get("skipped", 0) for c in clips),
    }
    return Batch(frames, masks, obj_to_frame_idx, metadata)
