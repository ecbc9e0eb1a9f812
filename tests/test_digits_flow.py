"""The bundled flow-matching digits model: it loads offline, pitsolve samples it as Diffusers does, and it is trained."""

from __future__ import annotations


import pytest
import torch

from pitsolve.adapters import digits
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

from conftest import load_example

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 28
SHAPE = (2, 1, 16, 16)
# Fréchet d² of 64 Euler-28 samples (seed 0) to the real test digits, measured 12.9 (the DDPM's DDIM-28: 14.8;
# 64 random real train digits: 15 … 25; noise: ≈ 4150); the bound leaves a margin for platform differences.
FLOW_FD_64_BOUND = 30.0


def relative_rms(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def flow():
    return digits.load_flow()


def test_bundled_flow_model_loads_offline(flow):
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    unet, scheduler = flow
    assert isinstance(unet, UNet2DModel) and not unet.training
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.shift == 1.0
    assert not scheduler.config.use_dynamic_shifting
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in digits.build_unet().parameters())
    weights = digits.FLOW_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 5_000_000


def diffusers_loop(unet, scheduler, latents):
    """Diffusers' own loop: set_timesteps(28); for t: v = model(x, t).sample; x = scheduler.step(v, t, x)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    s.set_timesteps(STEPS)
    x = latents
    with torch.no_grad():
        for t in s.timesteps:
            x = s.step(unet(x, t).sample, t, x).prev_sample
    return x


def test_sequential_equals_diffusers_loop(flow, report):
    unet, scheduler = flow
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    ref = diffusers_loop(unet, scheduler, latents)
    ours, _ = sequential_sample(unet, scheduler, num_inference_steps=STEPS, latents=latents,
                                generator=torch.Generator().manual_seed(0))
    err = float((ours - ref).norm() / ref.norm())
    report(f"digits flow Euler-{STEPS}: sequential vs Diffusers' loop, relative error {err:.1e}")
    assert err < 1e-5, err


def test_parallel_matches_sequential(flow, report):
    unet, scheduler = flow
    kw = dict(num_inference_steps=STEPS, shape=SHAPE, generator=torch.Generator().manual_seed(1))
    seq, _ = sequential_sample(unet, scheduler, **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    par, sol = parallel_sample(unet, scheduler, tol=1e-2, **kw)
    err = relative_rms(par, seq)
    report(f"digits flow Euler-{STEPS}: parallel (tol 1e-2) vs sequential, relative RMS {err:.1e}, "
           f"{sol.iterations} iterations, {sol.status.name}")
    assert sol.status.name == "CONVERGED"
    # tol bounds each image's RMS error relative to the data scale (max(σ, 1) = 1 at the end), not the
    # error relative to the sample's own RMS (< 1 here); CONVERGED promises that measure within 3·tol.
    per_image = (par - seq).flatten(1).pow(2).mean(dim=1).sqrt()
    assert float(per_image.max()) < 3e-2, per_image
    assert err < 3e-2, err


def test_flow_samples_are_digits(flow, report):
    """64 Euler-28 samples: far closer to the real digits than noise is, and confidently classified."""
    unet, scheduler = flow
    x, _ = sequential_sample(unet, scheduler, num_inference_steps=STEPS, shape=(64, 1, 16, 16),
                             generator=torch.Generator().manual_seed(0))
    x = x.clamp(-1, 1)
    classifier = digits.load_classifier()
    fd = digits.frechet_distance(x, classifier=classifier)
    labels = digits.predicted_labels(x, classifier).bincount(minlength=10)
    confidence = digits.classifier_confidence(x, classifier).mean().item()
    report(f"digits flow Euler-{STEPS} (64 samples): Fréchet {fd:.2f}; labels {labels.tolist()}; "
           f"mean confidence {confidence:.3f}")
    assert fd < FLOW_FD_64_BOUND, fd
    assert (labels > 0).sum() >= 8, labels.tolist()
    assert confidence > 0.8, confidence


def test_train_digits_flow_smoke(tmp_path):
    out = tmp_path / "flow"
    summary = load_example("train_digits_flow").main(["--smoke", "--out", str(out)])
    assert summary["steps"] == 3
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 3
    unet, scheduler = digits.load_flow(model_dir=out)
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.shift == 1.0
    x, _ = sequential_sample(unet, scheduler, num_inference_steps=2, shape=(1, 1, 16, 16),
                             generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 16, 16) and torch.isfinite(x).all()


def test_missing_flow_weights_name_the_training_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_digits_flow.py"):
        digits.load_flow(model_dir=tmp_path)
