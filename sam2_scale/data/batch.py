"""The one input format of the training objective."""

from dataclasses import dataclass

import torch


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
        return Batch(self.frames.to(device), self.masks.to(device), self.obj_to_frame_idx.to(device))

    @staticmethod
    def from_clip(frames, masks):
        """One clip: frames (T, 3, H, W), masks (T, O, H, W)."""
        t, o = masks.shape[:2]
        idx = torch.stack(torch.meshgrid(torch.arange(t), torch.zeros(o, dtype=torch.long), indexing="ij"), dim=-1)
        return Batch(frames.unsqueeze(1), masks.bool(), idx)
