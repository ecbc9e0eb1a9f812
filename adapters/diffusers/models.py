"""Calling Diffusers UNets (and modules with their call signature) on (window point × image) rows."""

from __future__ import annotations

from typing import Optional

import torch

from pitsolve import InputTypeError, InputValueError
from pitsolve.extend import as_integer, digest, replica

__all__ = ["UNetModel"]


class UNetModel:
    r"""``model(x [R, *S], t [R]) -> output [R, *S]`` around a Diffusers UNet.

    Rows are (window point, image) pairs, image-minor: row ``r`` belongs to
    image ``r mod batch``, so per-image conditioning is tiled over the window.

    * ``UNet2DModel``: ``unet(x, t, class_labels=...)``, optional class labels.
    * ``UNet2DConditionModel``: ``unet(x, t, encoder_hidden_states=...)``; with
      ``guidance_scale > 1``, classifier-free guidance
      ``ε = ε_u + w (ε_c − ε_u)`` with the unconditional and conditional halves
      in the **same** batched call (as Diffusers' Stable Diffusion pipeline).
    * any module with one of these call signatures returning a tensor, a tuple
      or an object with ``.sample``.

    ``max_batch`` caps the rows of one UNet call (guidance halves counted);
    larger batches are split into chunks.  Inputs are cast to the UNet's dtype
    and outputs back to the sampler's, so a float16/bfloat16 UNet can serve a
    float32 solver state.
    """

    def __init__(
        self,
        unet,
        batch_size: int,
        *,
        class_labels: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        negative_encoder_hidden_states: Optional[torch.Tensor] = None,
        guidance_scale: Optional[float] = None,
        max_batch: Optional[int] = None,
    ):
        if not callable(unet):
            raise InputTypeError(f"unet is a {type(unet).__name__}, not callable; pass a Diffusers UNet or module.")
        self.unet, self.batch_size = unet, batch_size
        self.guidance = guidance_scale is not None and guidance_scale > 1.0
        self.guidance_scale = guidance_scale
        if guidance_scale is not None and encoder_hidden_states is None:
            raise InputValueError(
                f"guidance_scale={guidance_scale} needs encoder_hidden_states (the prompt embeddings); "
                "pass them, or drop guidance_scale for an unconditional model."
            )
        if self.guidance and negative_encoder_hidden_states is None:
            raise InputValueError(
                f"guidance_scale={guidance_scale} > 1 needs negative_encoder_hidden_states (e.g. the "
                "embeddings of the empty prompt) for the unconditional half."
            )
        for name, value in (("encoder_hidden_states", encoder_hidden_states),
                            ("negative_encoder_hidden_states", negative_encoder_hidden_states),
                            ("class_labels", class_labels)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.shape[0] != batch_size):
                raise InputValueError(
                    f"{name} has shape {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)}; "
                    f"its first axis must be the number of images ({batch_size})."
                )
        if negative_encoder_hidden_states is not None and encoder_hidden_states is not None:
            if negative_encoder_hidden_states.shape != encoder_hidden_states.shape:
                raise InputValueError(
                    f"negative_encoder_hidden_states {tuple(negative_encoder_hidden_states.shape)} and "
                    f"encoder_hidden_states {tuple(encoder_hidden_states.shape)} differ in shape; pass equal shapes."
                )
        max_batch = as_integer(max_batch)
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise InputValueError(f"max_batch={max_batch!r} must be an int >= 1 or None.")
        self.class_labels = class_labels
        self.cond = encoder_hidden_states
        self.uncond = negative_encoder_hidden_states
        self.max_batch = max_batch
        self.calls = 0

    def to(self, device) -> "UNetModel":
        """A copy on ``device`` (for a replica of the system): the UNet moved with
        :func:`pitsolve.extend.to_device` (shared where it already lives), conditioning moved."""
        new = replica(self, device, ("unet", "class_labels", "cond", "uncond"))
        new.calls = 0
        return new

    def fingerprint(self):
        """What must agree across ranks: the UNet's weights, the conditioning and the guidance."""
        return {
            "unet": digest(self.unet),
            "conditioning": digest((self.class_labels, self.cond, self.uncond)),
            "guidance_scale": repr(self.guidance_scale),
            "batch_size, max_batch": f"{self.batch_size}, {self.max_batch}",
        }

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return getattr(self.unet, "dtype", None)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        reps = x.shape[0] // self.batch_size
        kwargs = {}
        if self.class_labels is not None:
            kwargs["class_labels"] = self.class_labels.repeat(reps)
        if self.cond is not None:
            ehs = self.cond.repeat(reps, *([1] * (self.cond.dim() - 1)))
            if self.guidance:
                neg = self.uncond.repeat(reps, *([1] * (self.uncond.dim() - 1)))
                out = self._forward(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([neg, ehs]))
                uncond, cond = out.chunk(2)
                return uncond + self.guidance_scale * (cond - uncond)
            kwargs["encoder_hidden_states"] = ehs
        return self._forward(x, t, **kwargs)

    def _forward(self, x, t, **kwargs) -> torch.Tensor:
        size = x.shape[0] if self.max_batch is None else self.max_batch
        outs = []
        for lo in range(0, x.shape[0], size):
            chunk = {k: v[lo : lo + size] for k, v in kwargs.items()}
            outs.append(self._call(x[lo : lo + size], t[lo : lo + size], **chunk))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _call(self, x, t, **kwargs) -> torch.Tensor:
        dtype = self.dtype or x.dtype
        kwargs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in kwargs.items()}
        out = self.unet(x.to(dtype), t, **kwargs)
        self.calls += 1
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise InputTypeError(f"the unet returned a {type(out).__name__}; it must return a tensor or .sample.")
        return out.to(x.dtype)
