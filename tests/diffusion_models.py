"""Tiny randomly initialised Diffusers UNets built from configs (no downloads), for the adapter tests."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel


def tiny_unet(seed: int = 0, dtype=torch.float64, num_class_embeds=None) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4, num_class_embeds=num_class_embeds,
    )
    return unet.to(dtype).eval()


def tiny_cond_unet(seed: int = 0, dtype=torch.float64) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    return unet.to(dtype).eval()


def tiny_plain_unet(seed: int = 0) -> UNet2DModel:
    """A float32 UNet without attention, the model of :func:`save_tiny_pipeline` (the CLI tests load it)."""
    torch.manual_seed(seed)  # the random weights of the saved model; called inside a test or fixture, not at import
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


def save_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Write ``DDPMPipeline(tiny_plain_unet(seed), DDPMScheduler())`` to ``folder`` with ``save_pretrained``."""
    DDPMPipeline(unet=tiny_plain_unet(seed), scheduler=DDPMScheduler()).save_pretrained(folder)
    return folder
