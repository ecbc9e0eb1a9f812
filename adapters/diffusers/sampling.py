"""``parallel_sample`` / ``sequential_sample``: a Diffusers UNet and scheduler, solved in parallel."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

import pitsolve
from pitsolve import ConvergenceError, InputTypeError, InputValueError, Solution

from ..diffusion.init import PosteriorInit
from ..diffusion.system import DEFAULT_SCALE_FLOOR, DiffusionSystem
from .models import UNetModel
from .options import DEFAULT_TOL, Conditioning, Generator, SampleSetup, SolveOptions, gather, resolve
from .schedulers import rule_from_scheduler

__all__ = ["parallel_sample", "sequential_sample", "build_system", "draw_noise", "DEFAULT_TOL"]


def draw_noise(
    shape, rule, generator: Generator, dtype, device, *, latents: bool = True
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The initial latents (unless ``latents=False``) and every fine step's noise, drawn up front.

    The latents come first, then one draw of the sample's shape for each step
    in ``rule.noise_steps`` — the order in which Diffusers' own sampling loop
    draws them from the same generator, so both see the same numbers.  A list
    of generators draws image by image (one generator each), as Diffusers does.
    """
    def randn():
        if isinstance(generator, (list, tuple)):
            if len(generator) != shape[0]:
                raise InputValueError(
                    f"{len(generator)} generators for {shape[0]} images; pass one generator per image or one in all."
                )
            return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype).to(device) for g in generator])
        return torch.randn(shape, generator=generator, dtype=dtype).to(device)

    first = randn() if latents else None
    if not bool(rule.noise_steps.any()):
        return first, None
    noise = torch.zeros((rule.num_steps, *shape), dtype=dtype, device=device)
    for i in torch.nonzero(rule.noise_steps).flatten().tolist():
        noise[i] = randn()
    return first, noise


def build_system(
    unet,
    scheduler,
    *,
    num_inference_steps: int,
    setup: Optional[SampleSetup] = None,
    conditioning: Optional[Conditioning] = None,
    scale_floor: Optional[float] = DEFAULT_SCALE_FLOOR,
    **flat,
) -> DiffusionSystem:
    """The :class:`DiffusionSystem` both samplers solve (same noise for the same generator).

    ``setup`` (:class:`SampleSetup`) and ``conditioning`` (:class:`Conditioning`)
    are given as objects or as their fields, flat (``generator=…, shape=…``).
    With ``devices``, the system is built where the UNet lives and returned
    as its replica on ``devices[0]`` (:meth:`DiffusionSystem.to`; the UNet is
    copied there if it lives elsewhere).  The noise is drawn on the CPU
    from the generator as always, so the samples do not depend on the devices.
    """
    setup, conditioning, _ = gather(flat, setup, conditioning, accept=(SampleSetup, Conditioning),
                                    where="build_system")
    return _build(unet, scheduler, num_inference_steps, setup, conditioning, scale_floor)


def _build(unet, scheduler, num_inference_steps: int, setup: SampleSetup, conditioning: Conditioning,
           scale_floor: Optional[float]) -> DiffusionSystem:
    # Read by name (not by field order, which a new field would shift).
    latents, generator, shape, intervals = setup.latents, setup.generator, setup.shape, setup.intervals
    eta, max_batch, dtype, devices = setup.eta, setup.max_batch, setup.dtype, setup.devices
    guidance_scale, class_labels = conditioning.guidance_scale, conditioning.class_labels
    encoder_hidden_states = conditioning.encoder_hidden_states
    negative_encoder_hidden_states = conditioning.negative_encoder_hidden_states
    first = pitsolve.MultiDeviceExecutor(devices).devices[0] if devices is not None else None
    rule = rule_from_scheduler(scheduler, num_inference_steps, eta=eta)
    _check_generator(generator)
    device = _device_of(unet)
    if device.type == "meta" and not _offloaded(unet):
        raise InputTypeError(
            "the unet lies on the meta device (its weights are not loaded); load or move it to a real "
            "device first, e.g. unet.to('cpu')."
        )
    if latents is not None:
        if not isinstance(latents, torch.Tensor):
            raise InputTypeError(
                f"latents is a {type(latents).__name__}; pass a floating-point torch.Tensor [batch, C, H, W]."
            )
        if not latents.is_floating_point():
            raise InputTypeError(f"latents have dtype {latents.dtype}; pass floating-point latents (float32).")
        # With devices the system is moved anyway; an offloaded UNet moves its weights at each call.
        known = _known_device(unet) if devices is None and not _offloaded(unet) else None
        if latents.device.type == "meta" or (known is not None and latents.device != known):
            target = known or (device if device.type != "meta" else torch.device("cpu"))
            raise InputTypeError(
                f"latents lie on {latents.device} but the unet on {target}; move them there, "
                f"e.g. latents.to('{target}')."
            )
    _check_conditioning(unet, class_labels, encoder_hidden_states)
    shape = _resolve_shape(unet, latents, shape, encoder_hidden_states, class_labels)
    _check_shape_fits_model(unet, shape, "latents" if latents is not None else "shape")
    if latents is not None:
        state_dtype = dtype or latents.dtype
        _, noise = draw_noise(shape, rule, generator, state_dtype, latents.device, latents=False)
        latents = latents.to(state_dtype)
    else:
        # float64 models keep a float64 state; anything else (float32/16, bfloat16) a float32 one.
        state_dtype = dtype or (torch.float64 if getattr(unet, "dtype", None) == torch.float64 else torch.float32)
        latents, noise = draw_noise(shape, rule, generator, state_dtype, device)
    # The latents' scale after set_timesteps(num_inference_steps) (σ_max-dependent for Euler-type samplers),
    # as Diffusers' pipelines multiply it in; a rule built from a fresh scheduler knows it.
    sigma0 = getattr(rule, "init_noise_sigma", None)
    sigma0 = getattr(scheduler, "init_noise_sigma", 1.0) if sigma0 is None else sigma0
    latents = latents * float(sigma0)
    model = UNetModel(
        unet, shape[0], class_labels=class_labels, encoder_hidden_states=encoder_hidden_states,
        negative_encoder_hidden_states=negative_encoder_hidden_states, guidance_scale=guidance_scale,
        max_batch=max_batch,
    )
    system = DiffusionSystem(model, rule, latents, noise, intervals, scale_floor=scale_floor)
    return system if first is None else system.to(first)


def parallel_sample(
    unet,
    scheduler,
    *,
    num_inference_steps: int,
    setup: Optional[SampleSetup] = None,
    conditioning: Optional[Conditioning] = None,
    options: Optional[SolveOptions] = None,
    **flat,
) -> Tuple[torch.Tensor, Solution]:
    r"""Sample with a Diffusers UNet and scheduler by parallel-in-time iteration (ParaSolver).

    The ``T = num_inference_steps`` steps of the scheduler's sampler are
    grouped into ``intervals`` subintervals (N; default T) and solved as a
    banded system with :func:`pitsolve.solve`.  The start is the Eq. 17
    initialisation with ``preconditioning_steps`` (M) model steps, unless
    ``init`` gives another initialiser.  The result is the sample
    :func:`sequential_sample` draws with the same arguments, to ``tol``
    (the error against the sequential sample, in the measure
    ``RMS(Δx)/max(σ_{t_n}, scale_floor)``, by default relative to the data scale).

    The options come in three groups, each given as an object or as its
    fields, flat (``window=16`` is ``options=SolveOptions(window=16)``):

    * :class:`SampleSetup`: ``latents``, ``generator``, ``shape``, ``intervals``,
      ``eta``, ``max_batch``, ``dtype``, ``devices``;
    * :class:`Conditioning`: ``guidance_scale``, ``encoder_hidden_states``,
      ``negative_encoder_hidden_states``, ``class_labels``;
    * :class:`SolveOptions`: ``jacobian``, ``window``, ``tol``, ``stopping``,
      ``scale_floor``, ``preconditioning_steps``, ``init``, ``max_iters``,
      ``progress``, ``throw``, ``executor``, ``guard``, ``trajectory``.

    ``jacobian``, ``window`` and ``preconditioning_steps`` left unset take the
    scheduler family's defaults, the configuration the defaults benchmark
    measured best (``SamplerEntry.defaults`` in the sampler registry, with the
    record that justifies it); ``Solution.settings`` records every value and
    where it came from, so a run can be repeated exactly.

    Args:
        unet: a ``UNet2DModel``/``UNet2DConditionModel`` or a module with
            their call signature.
        scheduler: any Diffusers scheduler (docs/schedulers.md lists each class's
            status): a hand-written rule serves the common ones, the generic
            bridge the others; it is not modified.  A scheduler whose
            parametrisation the bridge cannot read has no Eq. 17 posterior; the
            default start then copies the newest exact state forward after the
            ``M`` model steps.
        num_inference_steps: ``T``.

    Returns:
        ``(samples [batch, C, H, W], Solution)``.
    """
    setup, conditioning, options = gather(flat, setup, conditioning, options)
    options, sampler_settings = resolve(options, scheduler)
    system = _build(unet, scheduler, num_inference_steps, setup, conditioning, options.scale_floor)
    init = PosteriorInit(options.preconditioning_steps) if options.init is None else options.init
    if isinstance(init, PosteriorInit):
        init.reset(system)  # validate M against T before any model call
    record = {**sampler_settings, "intervals": repr(system.num_intervals)}
    try:
        with torch.no_grad():
            solution = pitsolve.solve(
                system, options.jacobian, window=options.window, tol=options.tol, max_iters=options.max_iters,
                init=init, progress=options.progress, throw=options.throw, devices=setup.devices,
                executor=options.executor, guard=options.guard, trajectory=options.trajectory,
                stopping=options.stopping,
            )
    except ConvergenceError as error:  # the partial solution records the settings too
        if error.solution is not None:
            error.solution.settings = {**error.solution.settings, **record}
        raise
    solution.settings = {**solution.settings, **record}
    return solution.y[0], solution


def sequential_sample(
    unet,
    scheduler,
    *,
    num_inference_steps: int,
    setup: Optional[SampleSetup] = None,
    conditioning: Optional[Conditioning] = None,
    options: Optional[SolveOptions] = None,
    **flat,
) -> Tuple[torch.Tensor, Solution]:
    """The sequential sampler with the same arguments and noise as :func:`parallel_sample`.

    It takes the same option groups; the :class:`SolveOptions` (which only
    concern the parallel solve) are accepted and ignored, so one set of
    keyword arguments drives both samplers.  With ``devices``, the
    sequential chain runs on ``devices[0]`` (there is nothing to spread).
    """
    setup, conditioning, _ = gather(flat, setup, conditioning, options, where="sequential_sample")
    system = _build(unet, scheduler, num_inference_steps, setup, conditioning, DEFAULT_SCALE_FLOOR)
    with torch.no_grad():
        solution = pitsolve.sequential(system)
    return solution.y[0], solution


def _check_generator(generator) -> None:
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    for g in gens:
        if g is not None and not isinstance(g, torch.Generator):
            raise InputTypeError(
                f"generator is a {type(g).__name__}; pass a torch.Generator (one in all or one per image), "
                "e.g. generator=torch.Generator().manual_seed(0), or None."
            )
        if g is not None and g.device.type != "cpu":
            what = "the meta device, which draws no numbers" if g.device.type == "meta" else str(g.device)
            raise InputTypeError(
                f"generator lies on {what}; pitsolve draws all noise on the CPU (so samples do not depend "
                "on the device): pass a CPU generator, e.g. generator=torch.Generator().manual_seed(0)."
            )


def _offloaded(unet) -> bool:
    """Whether accelerate hooks move the model's weights at each call (Diffusers' CPU offload)."""
    return hasattr(unet, "_hf_hook")


def _known_device(unet) -> Optional[torch.device]:
    """The device the model's weights live on, or ``None`` when it declares none (a plain function)."""
    device = getattr(unet, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensors in ("parameters", "buffers"):
        try:
            return next(getattr(unet, tensors)()).device
        except (AttributeError, StopIteration, TypeError):
            continue
    return None


def _device_of(unet) -> torch.device:
    device = getattr(unet, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(unet.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _check_shape_fits_model(unet, shape: Sequence[int], what: str) -> None:
    """Reject a sample shape the model cannot take, before any model call.

    Checked where the model declares it: ``config.sample_shape`` (e.g.
    :class:`~pitsolve.adapters.diffusion.GaussianMixtureDenoiser`) fixes every
    axis after the batch; ``config.in_channels`` (Diffusers UNets) fixes
    ``[batch, C, H, W]`` with ``C = in_channels`` (any ``H, W``).
    """
    shape = tuple(shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise InputValueError(f"{what} has shape {shape}; pass [batch, *sample_shape] with positive sizes.")
    config = getattr(unet, "config", None)
    sample_shape = getattr(config, "sample_shape", None)
    if sample_shape is not None:
        if shape[1:] != tuple(sample_shape):
            raise InputValueError(
                f"{what} has shape {shape} but the model takes samples of shape {tuple(sample_shape)}; "
                f"pass [batch, {', '.join(map(str, sample_shape))}]."
            )
        return
    channels = getattr(config, "in_channels", None)
    if isinstance(channels, int) and (len(shape) != 4 or shape[1] != channels):
        raise InputValueError(
            f"{what} has shape {shape} but the UNet takes [batch, {channels}, H, W] (in_channels={channels}); "
            f"pass latents or shape of that form."
        )
    blocks = getattr(config, "down_block_types", None)
    # A UNet2DModel's down blocks but the last halve H and W, and its up blocks double them back, so the
    # skip connections only line up for multiples of 2**(blocks - 1); UNet2DConditionModel (which has a
    # cross_attention_dim) forwards the odd sizes to its upsamplers and takes any size.
    if isinstance(channels, int) and isinstance(blocks, (list, tuple)) and len(blocks) > 1 and (
        getattr(config, "cross_attention_dim", None) is None
    ):
        factor = 2 ** (len(blocks) - 1)
        if any(s % factor for s in shape[2:]):
            fit = lambda s, up: max(factor, (s // factor + up) * factor)  # noqa: E731
            lower = (*shape[:2], *(fit(s, 0) for s in shape[2:]))
            upper = (*shape[:2], *(fit(s, 1 if s % factor else 0) for s in shape[2:]))
            raise InputValueError(
                f"{what} has shape {shape} but the UNet's {len(blocks)} down blocks take H and W that are "
                f"multiples of {factor} (2**{len(blocks) - 1}); pass e.g. {lower} or {upper}."
            )


def _check_conditioning(unet, class_labels, encoder_hidden_states) -> None:
    """Reject conditioning a Diffusers UNet has no input for (it would raise at its first call, or ignore it)."""
    config = getattr(unet, "config", None)
    if config is None or getattr(config, "down_block_types", None) is None:
        return  # not a Diffusers UNet: its call signature is the model's own business
    if class_labels is not None and getattr(config, "num_class_embeds", None) is None and (
        getattr(config, "class_embed_type", None) is None
    ):
        raise InputValueError(
            "class_labels were given but the UNet has no class embedding (num_class_embeds=None, "
            "class_embed_type=None), so it cannot use them; drop class_labels or use a class-conditional UNet."
        )
    if encoder_hidden_states is not None and getattr(config, "cross_attention_dim", None) is None:
        raise InputValueError(
            f"encoder_hidden_states were given but the UNet ({type(unet).__name__}) has no cross-attention "
            "(no cross_attention_dim in its config); drop encoder_hidden_states (and guidance_scale), "
            "or use a UNet2DConditionModel."
        )


def _resolve_shape(unet, latents, shape, encoder_hidden_states, class_labels) -> List[int]:
    if shape is not None:
        try:
            shape = [int(s) for s in shape]
        except (TypeError, ValueError):
            raise InputTypeError(f"shape={shape!r} is not a sequence of ints; pass (batch, C, H, W).") from None
        if latents is not None and tuple(latents.shape) != tuple(shape):
            raise InputValueError(
                f"latents have shape {tuple(latents.shape)} but shape={tuple(shape)}; pass one or make them agree."
            )
        return shape
    if latents is not None:
        return list(latents.shape)
    config = getattr(unet, "config", None)
    size = getattr(config, "sample_size", None)
    channels = getattr(config, "in_channels", None)
    if size is None or channels is None:
        raise InputValueError(
            "cannot infer the latent shape from the model; pass shape=(batch, C, H, W) or latents."
        )
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = 1
    for cond in (encoder_hidden_states, class_labels):
        if isinstance(cond, torch.Tensor):
            batch = cond.shape[0]
    return [batch, channels, *size]
