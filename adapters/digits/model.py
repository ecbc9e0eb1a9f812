"""The bundled DDPM on 16×16 digits: its architecture, its folder, loading and sampling.

The weights in ``MODEL_DIR`` are a Diffusers ``DDPMPipeline`` folder
(``model_index.json``, ``unet/`` as safetensors, ``scheduler/``) written by
``examples/train_digits.py``: an ε-prediction ``UNet2DModel`` (:func:`build_unet`)
under ``DDPMScheduler(num_train_timesteps=1000)`` with the default linear
betas 1e-4 … 0.02, trained on the ``"train"`` split of
:func:`pitsolve.adapters.digits.load_digits_images`; the saved UNet is the
exponential moving average of the trained weights.  ``loss.csv``,
``loss.png`` and ``training.json`` beside it record the run.

``FLOW_MODEL_DIR`` holds the second bundled model, written by
``examples/train_digits_flow.py``: a flow-matching (rectified-flow)
``UNet2DModel`` of the same architecture predicting the velocity
``v = ε − x_0`` of ``x_σ = (1 − σ) x_0 + σ ε``, called with the timestep
``1000 σ`` (Diffusers' convention), in ``unet/``, beside the
``scheduler_config.json`` of a ``FlowMatchEulerDiscreteScheduler``
(``num_train_timesteps=1000``, ``shift=1.0``); :func:`load_flow` loads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_DIR = WEIGHTS_DIR / "ddpm"
FLOW_MODEL_DIR = Path(__file__).resolve().parent / "weights_flow"
IMAGE_SIZE = 16

# 16×16 → 8×8 → 4×4 with self-attention at 8×8 and 4×4: 966,929 parameters.
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 48, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=32,
)


def build_unet():
    """A freshly initialised ``UNet2DModel`` with the bundled model's architecture (``UNET_CONFIG``)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def load_pipeline(device: Union[str, torch.device] = "cpu", model_dir: Optional[Path] = None):
    """``DDPMPipeline.from_pretrained`` of the bundled folder (or ``model_dir``), offline, in eval mode."""
    from diffusers import DDPMPipeline

    folder = Path(MODEL_DIR if model_dir is None else model_dir)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No DDPMPipeline folder at {folder} (model_index.json missing); "
            "train one with `python examples/train_digits.py`."
        )
    pipe = DDPMPipeline.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False).to(device)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_flow(device: Union[str, torch.device] = "cpu", model_dir: Optional[Path] = None):
    """``(unet, scheduler)`` of the bundled flow-matching model (or ``model_dir``), offline, the UNet in eval mode.

    ``unet`` is the ``UNet2DModel`` of ``FLOW_MODEL_DIR/unet``, ``scheduler`` the
    ``FlowMatchEulerDiscreteScheduler`` of ``FLOW_MODEL_DIR/scheduler_config.json``.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    folder = Path(FLOW_MODEL_DIR if model_dir is None else model_dir)
    if not (folder / "unet" / "config.json").is_file() or not (folder / "scheduler_config.json").is_file():
        raise FileNotFoundError(
            f"No flow-matching model at {folder} (unet/config.json or scheduler_config.json missing); "
            "train one with `python examples/train_digits_flow.py`."
        )
    unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, low_cpu_mem_usage=False)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, local_files_only=True)
    return unet.to(device).eval(), scheduler


@torch.no_grad()
def sample_digits(pipe, n: int, num_inference_steps: int = 1000, seed: int = 0) -> torch.Tensor:
    """Run ``pipe`` (with whatever scheduler it holds) for ``n`` samples; float32 ``[n, 1, 16, 16]`` in [-1, 1]."""
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    images = pipe(batch_size=n, generator=generator, num_inference_steps=num_inference_steps, output_type="pt").images
    return images.float().cpu() * 2.0 - 1.0
