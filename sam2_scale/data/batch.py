"""The one input format of the training objective."""

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """A batch of B clips of T frames with O objects in total, the objects of clip 0 first.

    frames:  uint8 (T, B, 3, H, W) as the loader hands them out (the model normalises them on its
             device: a quarter of the bytes to copy), or float frames already normalised.
    masks:   bool (T, O, H, W), ground truth per object and frame (all-zero where absent).
    obj_to_frame_idx: long (T, O, 2), per object (t, clip index in the batch).
    objects_per_clip: list of B ints, on the host, so per-clip work never reads the device.
    Images (SA-1B) are clips with T = 1.
    """

    frames: torch.Tensor
    masks: torch.Tensor
    obj_to_frame_idx: torch.Tensor
    objects_per_clip: list = None  # derived from obj_to_frame_idx when not given
    # Per clip: "sources" (video / image ids), "frame_indices"; per object: "object_ids";
    # "dataset" name and "skipped" (bad samples skipped upstream since the previous batch).
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.objects_per_clip is None:
            clip_of_object = self.obj_to_frame_idx[0, :, 1].cpu()
            if (clip_of_object.diff() < 0).any():
                raise ValueError("Batch: objects must be grouped by clip (clip 0's objects first)")
            self.objects_per_clip = torch.bincount(clip_of_object, minlength=self.num_clips).tolist()
        if sum(self.objects_per_clip) != self.num_objects or len(self.objects_per_clip) != self.num_clips:
            raise ValueError(
                f"Batch: objects_per_clip {self.objects_per_clip} does not fit {self.num_clips} clips, {self.num_objects} objects"
            )

    @property
    def num_frames(self):
        return self.frames.shape[0]

    @property
    def num_clips(self):
        return self.frames.shape[1]

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

    def _map(self, fn):
        return Batch(fn(self.frames), fn(self.masks), fn(self.obj_to_frame_idx), list(self.objects_per_clip), self.metadata)

    def to(self, device, non_blocking=False):
        """`non_blocking`: tensors in pinned memory are copied asynchronously, so the host runs
        ahead of the copy; the others (pageable memory) are copied synchronously."""
        return self._map(lambda x: x.to(device, non_blocking=non_blocking and x.is_pinned()))

    def pin_memory(self):
        """Called by the DataLoader's pinning thread (`pin_memory=True`)."""
        return self._map(lambda x: x.pin_memory())

    @staticmethod
    def from_clip(frames, masks):
        """One clip: frames (T, 3, H, W), masks (T, O, H, W)."""
        t, o = masks.shape[:2]
        idx = torch.stack(torch.meshgrid(torch.arange(t), torch.zeros(o, dtype=torch.long), indexing="ij"), dim=-1)
        return Batch(frames.unsqueeze(1), masks.bool(), idx, [o])


def collate_clips(clips, dataset="", pin_memory=False):
    """Clips of equal length (dicts from `sam2_scale.data.clips`, uint8 frames) -> one Batch.
    Objects of all clips are concatenated; `obj_to_frame_idx` says which clip each one belongs to.
    Frames stay uint8: the trainer normalises them on its device.

    pin_memory: assemble frames and masks straight into page-locked memory, from which the copy
    to a GPU runs asynchronously (`Batch.to(device, non_blocking=True)`)."""
    lengths = {c["frames"].shape[0] for c in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of different lengths in one batch: {sorted(lengths)}")
    (t,) = lengths
    first = clips[0]
    num_objects = sum(c["masks"].shape[1] for c in clips)
    frames = torch.empty((t, len(clips), *first["frames"].shape[1:]), dtype=first["frames"].dtype, pin_memory=pin_memory)
    masks = torch.empty((t, num_objects, *first["masks"].shape[2:]), dtype=first["masks"].dtype, pin_memory=pin_memory)
    torch.stack([c["frames"] for c in clips], dim=1, out=frames)  # (T, B, 3, H, W)
    torch.cat([c["masks"] for c in clips], dim=1, out=masks)  # (T, O, H, W)
    objects_per_clip = [c["masks"].shape[1] for c in clips]
    clip_of_object = torch.repeat_interleave(torch.arange(len(clips)), torch.tensor(objects_per_clip))
    obj_to_frame_idx = torch.stack(
        [torch.arange(t)[:, None].expand(t, len(clip_of_object)), clip_of_object[None].expand(t, -1)], dim=-1
    )
    if pin_memory:
        obj_to_frame_idx = obj_to_frame_idx.pin_memory()
    metadata = {
        "dataset": dataset,
        "sources": [c["source"] for c in clips],
        "frame_indices": [c["frame_indices"] for c in clips],
        "object_ids": [i for c in clips for i in c["object_ids"]],
        "skipped": sum(c.get("skipped", 0) for c in clips),
    }
    return Batch(frames, masks, obj_to_frame_idx, objects_per_clip, metadata)
