"""``ParallelDiffusionPipeline``: built from Diffusers pipelines, it samples what they sample.

Two tiny pipelines built from configs (no downloads): a ``DDPMPipeline`` around
:func:`diffusion_models.tiny_unet` (float64, so parallel and sequential
solves agree to rounding) and a float32 Stable-Diffusion pipeline with a tiny
CLIP text encoder, a CLIP BPE tokenizer written into a temporary folder, a
conditional UNet and a one-block VAE.  Every comparison is with the
library's own output (Diffusers' pipelines and ``encode_prompt``, or
:func:`sequential_sample`), never with stored numbers.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pitsolve import Solution
from pitsolve.adapters.diffusers import ParallelDiffusionPipeline, ParallelPipelineOutput, sequential_sample

from conftest import gen
from diffusion_models import tiny_unet

STEPS = 8
BATCH = 2
#: Stopping tolerance δ (Eq. 14) for "parallel equals sequential" checks: far below any visible change.
TIGHT = 1e-9


def rel_err(a, b) -> float:
    a, b = (torch.as_tensor(x).double() for x in (a, b))
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


# ---------------------------------------------------------------------------------------------
# Unconditional: DDPMPipeline → ParallelDiffusionPipeline
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddpm_pipe():
    pipe = DDPMPipeline(unet=tiny_unet(dtype=torch.float64), scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_from_pipe_shares_components(ddpm_pipe):
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe)
    assert isinstance(ppipe, ParallelDiffusionPipeline)
    assert ppipe.unet is ddpm_pipe.unet and ppipe.scheduler is ddpm_pipe.scheduler
    assert ppipe.vae is None and ppipe.text_encoder is None and ppipe.tokenizer is None
    # Diffusers' own from_pipe would cast the shared UNet to float32 in place; ours leaves it alone.
    assert ddpm_pipe.unet.dtype == torch.float64
    ddim = DDIMScheduler.from_config(ddpm_pipe.scheduler.config)
    swapped = ParallelDiffusionPipeline.from_pipe(ddpm_pipe, scheduler=ddim)
    assert swapped.scheduler is ddim and swapped.unet is ddpm_pipe.unet
    assert isinstance(ddpm_pipe.scheduler, DDPMScheduler)  # the source pipeline keeps its own


def test_from_pipe_casts_only_when_asked():
    pipe = DDPMPipeline(unet=tiny_unet(dtype=torch.float32), scheduler=DDPMScheduler())
    assert ParallelDiffusionPipeline.from_pipe(pipe).unet.dtype == torch.float32
    ppipe = ParallelDiffusionPipeline.from_pipe(pipe, torch_dtype=torch.float64)
    assert ppipe.unet is pipe.unet and pipe.unet.dtype == torch.float64  # shared, so cast in place


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types_and_parallel_equals_sequential(ddpm_pipe, output_type):
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe)
    kw = dict(batch_size=BATCH, num_inference_steps=STEPS, output_type=output_type)
    par = ppipe(generator=gen(1), tol=TIGHT, intervals=3, **kw)
    seq = ppipe(generator=gen(1), parallel=False, **kw)
    assert isinstance(par, ParallelPipelineOutput)
    assert isinstance(par.solution, Solution) and par.solution.converged
    assert seq.solution.nfe == STEPS
    size = ddpm_pipe.unet.config.sample_size
    if output_type == "pil":
        assert isinstance(par.images, list) and len(par.images) == BATCH
        assert all(isinstance(im, PIL.Image.Image) and im.size == (size, size) for im in par.images)
        # 8-bit images: equal up to a rounding flip of one level.
        diff = np.abs(np.stack([np.asarray(i, dtype=int) for i in par.images])
                      - np.stack([np.asarray(i, dtype=int) for i in seq.images]))
        assert diff.max() <= 1
        return
    if output_type == "np":
        assert isinstance(par.images, np.ndarray) and par.images.shape == (BATCH, size, size, 1)
        assert 0.0 <= par.images.min() and par.images.max() <= 1.0
    else:
        assert isinstance(par.images, torch.Tensor) and tuple(par.images.shape) == (BATCH, 1, size, size)
    assert rel_err(par.images, seq.images) < 1e-6


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_latents_equal_sequential_sample(ddpm_pipe, scheduler):
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe)
    if scheduler == "ddim":
        ddim = DDIMScheduler.from_config(ddpm_pipe.scheduler.config)
        ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe, scheduler=ddim)
    kw = dict(batch_size=BATCH, num_inference_steps=STEPS, output_type="latent")
    ours = ppipe(generator=gen(2), parallel=False, **kw).images
    ref, _ = sequential_sample(ppipe.unet, ppipe.scheduler, num_inference_steps=STEPS, generator=gen(2),
                               shape=(BATCH, 1, 8, 8))
    assert torch.equal(ours, ref)  # the same code path and noise: bit-identical
    par = ppipe(generator=gen(2), tol=TIGHT, **kw)
    assert par.solution.converged and rel_err(par.images, ref) < 1e-6


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_np_equals_diffusers_pipeline(ddpm_pipe, scheduler):
    """Our images (parallel=False) are Diffusers' DDPMPipeline / DDIMPipeline images for the same generator."""
    if scheduler == "ddpm":
        ref_pipe = ddpm_pipe
    else:
        ref_pipe = DDIMPipeline(unet=ddpm_pipe.unet, scheduler=DDIMScheduler.from_config(ddpm_pipe.scheduler.config))
        ref_pipe.set_progress_bar_config(disable=True)
    ppipe = ParallelDiffusionPipeline.from_pipe(ref_pipe)
    ref = ref_pipe(batch_size=BATCH, generator=gen(3), num_inference_steps=STEPS, output_type="np").images
    ours = ppipe(batch_size=BATCH, generator=gen(3), num_inference_steps=STEPS, output_type="np", parallel=False)
    assert ours.images.shape == ref.shape
    # Both float64 samplers, clamped to [0, 1] and rounded to float32: agreement to float32 rounding.
    assert float(np.abs(ours.images - ref).max()) < 1e-6


# ---------------------------------------------------------------------------------------------
# Stable Diffusion from tiny components
# ---------------------------------------------------------------------------------------------

PROMPTS = ["a church", "an ox on a hill"]
GUIDANCE = 3.0


def _tiny_clip_tokenizer(folder) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over lower-case letters with a few merges, from files (no download)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = ["c h", "c h</w>", "ch u", "chu r", "chur ch</w>", "o x</w>", "h i", "hi l", "hil l</w>"]
    for merge in merges:
        vocab.setdefault("".join(merge.split()), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=16, local_files_only=True)


def _tiny_sd(folder, scheduler) -> StableDiffusionPipeline:
    tokenizer = _tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8,), latent_channels=4, norm_num_groups=4,
        sample_size=8, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    ).eval()
    with warnings.catch_warnings():  # "steps_offset should be 1" / "clip_sample not set": SD patches the config
        warnings.simplefilter("ignore", FutureWarning)
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


SD_SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(num_train_timesteps=1000),
    "ddpm": lambda: DDPMScheduler(num_train_timesteps=1000),
    "dpm2m": lambda: DPMSolverMultistepScheduler(num_train_timesteps=1000),
}


@pytest.fixture(scope="module", params=sorted(SD_SCHEDULERS))
def sd_pipe(request, tmp_path_factory):
    return _tiny_sd(tmp_path_factory.mktemp("clip_tokenizer"), SD_SCHEDULERS[request.param]())


def test_sd_prompt_encoding_equals_diffusers(sd_pipe):
    ppipe = ParallelDiffusionPipeline.from_pipe(sd_pipe)
    assert ppipe.text_encoder is sd_pipe.text_encoder and ppipe.vae is sd_pipe.vae
    cond, uncond = sd_pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    assert torch.equal(ppipe.encode_prompt(PROMPTS), cond)
    assert torch.equal(ppipe.encode_prompt([""] * len(PROMPTS)), uncond)  # SD's default negative prompt
    _, neg = sd_pipe.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=["ox", "hill"])
    assert torch.equal(ppipe.encode_prompt(["ox", "hill"]), neg)


@pytest.mark.parametrize("negative_prompt", [None, ["ox", "hill"]])
def test_sd_sequential_latents_equal_diffusers(sd_pipe, negative_prompt):
    """Our sequential sampler is Stable Diffusion's own loop: latents drawn first then each step's noise,
    ``init_noise_sigma``, ``ε_u + w (ε_c − ε_u)`` with the empty prompt as default negative, and the
    scheduler config as the SD pipeline patched it (steps_offset=1, clip_sample=False)."""
    ppipe = ParallelDiffusionPipeline.from_pipe(sd_pipe)
    kw = dict(guidance_scale=GUIDANCE, num_inference_steps=STEPS, negative_prompt=negative_prompt,
              output_type="latent")
    ref = sd_pipe(PROMPTS, generator=gen(4), **kw).images
    ours = ppipe(PROMPTS, generator=gen(4), parallel=False, **kw)
    assert ours.images.dtype == ref.dtype == torch.float32 and ours.images.shape == ref.shape
    # Same float32 operations up to the order of a few products in the step formulas.
    assert rel_err(ours.images, ref) < 1e-5
    # Guidance and the negative prompt are really applied: without them the sample differs.
    plain = ppipe(PROMPTS, generator=gen(4), parallel=False, **{**kw, "guidance_scale": 1.0}).images
    assert rel_err(plain, ref) > 1e-3


def test_sd_parallel_equals_sequential_np(sd_pipe):
    ppipe = ParallelDiffusionPipeline.from_pipe(sd_pipe)
    kw = dict(guidance_scale=GUIDANCE, num_inference_steps=STEPS, output_type="np")
    par = ppipe(PROMPTS, generator=gen(5), tol=1e-4, intervals=4, max_batch=8, **kw)
    seq = ppipe(PROMPTS, generator=gen(5), parallel=False, **kw)
    ref = sd_pipe(PROMPTS, generator=gen(5), **kw).images
    size = sd_pipe.unet.config.sample_size * sd_pipe.vae_scale_factor
    assert par.images.shape == seq.images.shape == ref.shape == (len(PROMPTS), size, size, 3)
    assert np.isfinite(par.images).all() and 0.0 <= par.images.min() and par.images.max() <= 1.0
    assert par.solution.converged
    # Eq. 14 accepts a point once its RMS change is ≤ tol·σ_n ≤ 1e-4 (σ ≤ 1), so the parallel latents are
    # within ~1e-4 RMS of the sequential ones (RMS ~1); float32 UNet calls on differently composed
    # batches add rounding ~1e-7 per call, and the small VAE decoder does not amplify either: 1e-4
    # relative on the images (measured ~2e-7).
    assert rel_err(par.images, seq.images) < 1e-4
    assert rel_err(seq.images, ref) < 1e-5  # decoding and post-processing as Stable Diffusion does
    pil = ppipe(PROMPTS, generator=gen(5), parallel=False, **{**kw, "output_type": "pil"}).images
    assert len(pil) == len(PROMPTS) and all(im.mode == "RGB" and im.size == (size, size) for im in pil)
