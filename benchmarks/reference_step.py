"""Meta's own SAM 2.1 training step, for speed ratios measured in the same run.

Built from the released package (`sam2` with its `training` folder; the Makefile installs it as
the tests' oracle): `training.model.sam2.SAM2Train` with the settings of
`sam2.1_hiera_b+_MOSE_finetune.yaml` (prompt simulation, 7 correction clicks, ...), the image
encoder of the requested size from `sam2.1_hiera_{t,s,b+,l}.yaml`, its loss
`MultiStepMultiMasksAndIous`, AdamW and gradient clipping at 0.1, under bf16 autocast, as its
trainer runs them.
"""

import importlib.resources

import torch

META_SIZE_FILES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def build_reference_step(size, image_size, device, precision="bf16"):
    """A callable running one optimizer step of Meta's trainer on a batch from `reference_batch`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from training.trainer import CORE_LOSS_KEY

    configs = importlib.resources.files("sam2") / "configs"
    recipe = OmegaConf.load(configs / "sam2.1_training" / "sam2.1_hiera_b+_MOSE_finetune.yaml")
    model_cfg = OmegaConf.to_container(recipe.trainer.model, resolve=True)
    sized = OmegaConf.load(configs / "sam2.1" / f"sam2.1_hiera_{META_SIZE_FILES[size]}.yaml")
    encoder = OmegaConf.to_container(sized.model.image_encoder, resolve=True)
    encoder["trunk"]["drop_path_rate"] = model_cfg["image_encoder"]["trunk"]["drop_path_rate"]
    model_cfg["image_encoder"] = encoder
    model_cfg["image_size"] = image_size
    model = instantiate(model_cfg, _convert_="all").to(device).train()
    loss_fn = instantiate(OmegaConf.to_container(recipe.trainer.loss.all, resolve=True), _convert_="all")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-6, weight_decay=0.1, fused=device.type == "cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
            outputs = model(batch)
            loss = loss_fn(outputs, batch.masks)[CORE_LOSS_KEY]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.model = model
    return step


def reference_batch(frames, masks, obj_to_frame_idx):
    """Meta's `BatchedVideoDatapoint` of normalised frames (T, B, 3, H, W), bool masks (T, O, H, W)
    and (t, clip) indices (T, O, 2)."""
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    t, num_objects = masks.shape[:2]
    device = masks.device  # the step's: every tensor of the batch is built there
    object_ids = torch.arange(num_objects, device=device).expand(t, -1)
    ids = torch.stack([obj_to_frame_idx[..., 1], object_ids, obj_to_frame_idx[..., 0]], -1)
    size = torch.tensor(masks.shape[-2:], device=device).expand(t, num_objects, 2)
    metadata = BatchedVideoMetaData(unique_objects_identifier=ids, frame_orig_size=size, batch_size=[t])
    return BatchedVideoDatapoint(
        img_batch=frames,
        obj_to_frame_idx=obj_to_frame_idx.int(),
        masks=masks,
        metadata=metadata,
        dict_key="all",
        batch_size=[t],
    )
