"""Loading the model a CLI run samples from: the bundled digits DDPM or any local Diffusers folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import diffusers
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from diffusers.utils import logging as diffusers_logging

from pitsolve import InputValueError

from ..diffusion.rules.registry import SAMPLERS, served_by

__all__ = ["load_model", "make_scheduler", "weights_digest", "config_dict", "SCHEDULERS", "DEFAULT_STEPS", "sampler_help"]

#: CLI name → (Diffusers class, extra config), from the sampler table next to the registry
#: (:data:`pitsolve.adapters.diffusion.rules.registry.SAMPLERS`).
SCHEDULERS = {e.name: (getattr(diffusers, e.scheduler), dict(e.config)) for e in SAMPLERS}
#: CLI name → default number of sampling steps.
DEFAULT_STEPS = {e.name: e.default_steps for e in SAMPLERS}


def sampler_help() -> str:
    """The ``--scheduler`` help: each name with its Diffusers class, default steps and how it is served."""
    return "sampler (default: ddpm): " + "; ".join(
        f"{e.name} = {e.scheduler}, {e.default_steps} steps, {served_by(e.scheduler)}" for e in SAMPLERS
    )


def load_model(path: Optional[str]) -> Tuple[UNet2DModel, object, str]:
    """``(unet, scheduler, description)`` from a ``DDPMPipeline`` folder, a ``UNet2DModel`` folder or the default.

    Everything is read from local files; nothing is downloaded.
    """
    if path is None:
        from pitsolve.adapters.digits import MODEL_DIR

        path, label = str(MODEL_DIR), "bundled digits DDPM"
    else:
        label = path
    folder = Path(path)
    diffusers_logging.disable_progress_bar()  # the loading bar is noise on a CLI that prints its own table
    try:
        if (folder / "model_index.json").is_file():
            pipe = DDPMPipeline.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
            return pipe.unet, pipe.scheduler, label
        if (folder / "config.json").is_file():
            unet = UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
            sched_file = folder / "scheduler_config.json"
            scheduler = DDPMScheduler.from_pretrained(folder) if sched_file.is_file() else DDPMScheduler()
            return unet, scheduler, label
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputValueError(
            f"--model {path}: the folder could not be loaded ({type(err).__name__}: {reason}); "
            "pass a DDPMPipeline or UNet2DModel folder written by save_pretrained."
        ) from None
    raise InputValueError(
        f"--model {path}: no Diffusers pipeline (model_index.json) or UNet (config.json) there; "
        "pass a folder written by save_pretrained, or leave --model out for the bundled digits model."
    )


def make_scheduler(name: str, base) -> object:
    """The scheduler ``name`` built from ``base``'s config (its noise schedule and prediction type)."""
    cls, extra = SCHEDULERS[name]
    return cls.from_config(base.config, **extra)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of ``module.state_dict()``: every tensor's name, dtype, shape and bytes, keys in sorted order.

    It identifies the weights themselves, whatever file format (safetensors, .bin) held them, so a
    folder changed at the same path is detected.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def config_dict(obj) -> Dict[str, Any]:
    """A Diffusers model's or scheduler's config as plain JSON values, with its ``_class_name``."""
    config = {k: v for k, v in dict(obj.config).items() if not k.startswith("_")}
    config = json.loads(json.dumps(config, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return {"_class_name": type(obj).__name__, **config}
