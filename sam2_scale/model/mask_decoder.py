"""SAM 2.1 mask decoder: two-way transformer over [obj-score, IoU, 4 mask tokens, prompts],
upscaling with the stride-8/4 high-res features, hypernetwork mask heads, IoU and object-score heads.
"""

import torch
import torch.nn as nn

from .layers import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer,
        transformer_dim=256,
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=False,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    ):
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = True
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.use_high_res_features = True

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # Project the stride-4 / stride-8 FPN maps once per image (called from forward_image).
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, sigmoid_output=True
        )
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)

        # Inference-only fallback from an unstable single mask to the best multimask output.
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        multimask_output,
        repeat_image,
        high_res_features=None,
    ):
        """Returns mask logits (B, M, 4h, 4w), IoU predictions (B, M), the output tokens for the
        object pointer (B, M or 1, C) and object-score logits (B, 1); M = 3 or 1.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image, high_res_features
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image, high_res_features=None
    ):
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
        else:
            if image_embeddings.shape[0] != tokens.shape[0]:
                raise ValueError(f"{image_embeddings.shape[0]} images for {tokens.shape[0]} prompt sets")
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = image_pe.expand(tokens.shape[0], -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        obj_score_token_out = hs[:, 0]
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens]

        src = src.transpose(1, 2).view(b, c, h, w)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act1(norm1(up1(src) + feat_s1))
        upscaled = act2(up2(upscaled) + feat_s0)

        hyper_in = self._hypernetworks(mask_tokens_out)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        object_score_logits = self.pred_obj_score_head(obj_score_token_out)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _hypernetworks(self, mask_tokens_out):
        """The per-token MLPs (one per mask token) as batched matmuls: (B, K, C) -> (B, K, C/8).

        Same weights and maths as running `output_hypernetworks_mlps[i]` on token i, in a third of
        the kernel launches."""
        x = mask_tokens_out.transpose(0, 1)  # (K, B, C)
        mlps = self.output_hypernetworks_mlps
        last = len(mlps[0].layers) - 1
        for j in range(last + 1):
            weight = torch.stack([mlp.layers[j].weight for mlp in mlps])  # (K, out, in)
            bias = torch.stack([mlp.layers[j].bias for mlp in mlps])  # (K, out)
            x = torch.baddbmm(bias.unsqueeze(1).to(x.dtype), x, weight.transpose(1, 2).to(x.dtype))
            if j < last:
                x = torch.relu(x)
        return x.transpose(0, 1)

    def _stability_scores(self, mask_logits):
        # IoU between the masks thresholded at +delta and -delta.
        logits = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        inner = (logits > delta).sum(-1).float()
        outer = (logits > -delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def _dynamic_multimask_via_stability(self, all_masks, all_ious):
        best = torch.argmax(all_ious[:, 1:], dim=-1)
        rows = torch.arange(all_ious.shape[0], device=all_ious.device)
        best_masks = all_masks[:, 1:][rows, best].unsqueeze(1)
        best_ious = all_ious[:, 1:][rows, best].unsqueeze(1)
        single_masks, single_ious = all_masks[:, 0:1], all_ious[:, 0:1]
        stable = self._stability_scores(single_masks) >= self.dynamic_multimask_stability_thresh
        masks = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        ious = torch.where(stable.expand_as(single_ious), single_ious, best_ious)
        return masks, ious
