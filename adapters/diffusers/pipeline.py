"""A Diffusers pipeline that samples in parallel: ``ParallelDiffusionPipeline.from_pipe(pipe)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput

from pitsolve import InputTypeError, InputValueError, Solution

from .options import SolveOptions
from .sampling import parallel_sample, sequential_sample

__all__ = ["ParallelDiffusionPipeline", "ParallelPipelineOutput"]

_OUTPUT_TYPES = ("pil", "np", "pt", "latent")
#: Sampler options the pipeline derives from its own arguments → what to pass instead.
_SET_HERE = {
    "shape": "batch_size, height and width", "encoder_hidden_states": "prompt or prompt_embeds",
    "negative_encoder_hidden_states": "negative_prompt or negative_prompt_embeds",
}


@dataclass
class ParallelPipelineOutput(BaseOutput):
    """Images (PIL, numpy or latent tensors, per ``output_type``) and the solve's :class:`~pitsolve.Solution`."""

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    solution: Solution


class ParallelDiffusionPipeline(DiffusionPipeline):
    r"""Unconditional (``DDPMPipeline``-style) or text-to-image (Stable-Diffusion-style) sampling in parallel.

    Build it from an existing pipeline's components, without copying weights::

        pipe = StableDiffusionPipeline.from_pretrained(...).to("cuda")
        ppipe = ParallelDiffusionPipeline.from_pipe(pipe)
        image = ppipe("a photo of a church", num_inference_steps=50).images[0]

    With a text encoder the prompt is encoded as Stable Diffusion does
    (classifier-free guidance when ``guidance_scale > 1``); with a VAE the
    latents are decoded.  Sampling runs :func:`parallel_sample`
    (``parallel=False``: :func:`sequential_sample`, same noise); every
    sampler option (:class:`SolveOptions`, and ``intervals``, ``max_batch``,
    ``dtype``, ``devices``) is passed through, and unset ones take the
    scheduler's measured defaults.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "text_encoder", "tokenizer"]
    _components = ("unet", "scheduler", "vae", "text_encoder", "tokenizer")

    def __init__(
        self,
        unet: Union[UNet2DModel, UNet2DConditionModel],
        scheduler: Union[DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler],
        vae: Optional[AutoencoderKL] = None,
        text_encoder=None,
        tokenizer=None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, *, torch_dtype: Optional[torch.dtype] = None, **components):
        """A parallel pipeline sharing ``pipeline``'s components (same objects, no copy, no cast).

        Keyword arguments replace components (``scheduler=DDIMScheduler.from_config(...)``).
        Diffusers' ``DiffusionPipeline.from_pipe`` casts the shared modules in place to
        ``torch_dtype``, float32 by default, which would silently turn the source pipeline's
        float16 (or float64) weights into float32; here they keep their dtype unless
        ``torch_dtype`` is given.
        """
        unknown = sorted(set(components) - set(cls._components))
        if unknown:
            raise InputTypeError(
                f"from_pipe got unknown components {unknown}; replaceable ones: {', '.join(cls._components)}."
            )
        source = pipeline.components if isinstance(pipeline, DiffusionPipeline) else {}
        if not isinstance(pipeline, DiffusionPipeline) or source.get("unet") is None:
            raise InputTypeError(
                f"from_pipe needs a Diffusers pipeline with a unet, got {type(pipeline).__name__}; "
                "or build ParallelDiffusionPipeline(unet=..., scheduler=...) directly."
            )
        new = cls(**{name: components.get(name, source.get(name)) for name in cls._components})
        if torch_dtype is not None:
            new.to(dtype=torch_dtype)
        return new

    @torch.no_grad()
    def encode_prompt(self, prompt: Union[str, List[str]]) -> torch.Tensor:
        """Prompt(s) → text-encoder hidden states, as Stable Diffusion's pipeline computes them."""
        if self.text_encoder is None or self.tokenizer is None:
            raise InputValueError("this pipeline has no text encoder/tokenizer; pass prompt_embeds instead of prompt.")
        tokens = self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        device = self.text_encoder.device
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):  # as Stable Diffusion's encode_prompt
            mask = tokens.attention_mask.to(device)
        return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[None, str, List[str]] = None,
        *,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: Union[None, str, List[str]] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        class_labels: Optional[torch.Tensor] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        generator=None,
        latents: Optional[torch.Tensor] = None,
        eta: float = 0.0,
        parallel: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
        options: Optional[SolveOptions] = None,
        **flat,
    ):
        """Sample images; the arguments above are Diffusers' own, the rest the samplers' options.

        ``options`` (:class:`SolveOptions`) or its fields flat (``window=16``,
        ``jacobian=…``, ``tol=…``, ``guard=…``, ``max_iters=…``, ``init=…``,
        ``throw=…``, ``trajectory=…``, ``executor=…``, ``progress=…``), and the
        :class:`SampleSetup` fields ``intervals``, ``max_batch``, ``dtype`` and
        ``devices``, go to :func:`parallel_sample` as they are; unset solve
        options take the scheduler's measured defaults.  ``parallel=False`` runs
        :func:`sequential_sample` with the same noise.
        """
        if output_type not in _OUTPUT_TYPES:  # before any model call
            raise InputValueError(f"output_type={output_type!r}; choose one of {', '.join(map(repr, _OUTPUT_TYPES))}.")
        conditional = isinstance(self.unet, UNet2DConditionModel) or prompt is not None or prompt_embeds is not None
        cond = uncond = None
        if conditional:
            if prompt_embeds is None:
                if prompt is None:
                    raise InputValueError("a conditional UNet needs prompt or prompt_embeds.")
                prompt_embeds = self.encode_prompt(prompt)
            batch_size = prompt_embeds.shape[0]
            cond = prompt_embeds
            if guidance_scale is not None and guidance_scale > 1.0:
                if negative_prompt_embeds is None:
                    negative = negative_prompt if negative_prompt is not None else ""
                    if isinstance(negative, str):
                        negative = [negative] * batch_size
                    negative_prompt_embeds = self.encode_prompt(negative)
                uncond = negative_prompt_embeds
            else:
                guidance_scale = None
        else:
            guidance_scale = None
            if class_labels is not None:
                batch_size = class_labels.shape[0]
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if height is not None or width is not None:
            size = ((height or size[0] * self.vae_scale_factor) // self.vae_scale_factor,
                    (width or size[1] * self.vae_scale_factor) // self.vae_scale_factor)
        shape = (batch_size, self.unet.config.in_channels, *size)
        for name in _SET_HERE:
            if name in flat:
                raise InputTypeError(f"the pipeline sets {name} itself; pass {_SET_HERE[name]} instead.")
        sampler = parallel_sample if parallel else sequential_sample
        samples, solution = sampler(
            self.unet, self.scheduler, num_inference_steps=num_inference_steps, latents=latents,
            generator=generator, shape=shape, eta=eta, guidance_scale=guidance_scale,
            encoder_hidden_states=cond, negative_encoder_hidden_states=uncond, class_labels=class_labels,
            options=options, **flat,
        )
        images = self._decode(samples, output_type)
        if not return_dict:
            return images, solution
        return ParallelPipelineOutput(images=images, solution=solution)

    def _decode(self, samples: torch.Tensor, output_type: str):
        if output_type == "latent":
            return samples
        if self.vae is not None:
            z = samples.to(self.vae.dtype) / self.vae.config.scaling_factor
            shift = getattr(self.vae.config, "shift_factor", None)
            if shift:
                z = z + shift
            image = self.vae.decode(z).sample
            return self.image_processor.postprocess(image, output_type=output_type)
        return self.image_processor.postprocess(samples, output_type=output_type)
