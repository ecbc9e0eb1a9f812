"""The "peers" benchmark suite: Diffusers' ParaDiGMS pipeline on our model with our noise (tiny UNet, few steps)."""

from __future__ import annotations


import pytest
import torch

pytest.importorskip("transformers")  # the ParaDiGMS pipeline module imports it
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from diffusion_models import tiny_unet  # noqa: E402

# benchmarks/ is a folder of the repository, not of the installed package: tests/conftest.py puts the
# repository on sys.path.

from benchmarks.suites import peers  # noqa: E402


# The tiny UNet's calls take milliseconds; intra-op threads on a busy machine only spin (0.5 s a call).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(seed=0, dtype=torch.float64)


CONFIG = DDPMScheduler(num_train_timesteps=1000).config


#: Diffusers' schedulers round their coefficients through float32 ``alphas_cumprod``, ours are float64:
#: samples of the two sequential samplers differ by about 2e-7 (relative RMS) even in float64.
COEFFICIENT_FLOOR = 1e-6


def test_peer_ddim_is_diffusers_loop_and_our_sequential_sample(unet):
    """Same model, same latents: the peer's converged DDIM sample is Diffusers' own loop and our sequential one."""
    c = peers.Comparison(unet, CONFIG, peers.Setting("DDIM-10", "ddim", 10, 10), images=2, seed=3)
    x, calls, rows = c.peer(tolerance=1e-9)
    assert 1 < calls <= 10 and rows > 2 * calls  # batched waves over the window
    scheduler = DDIMScheduler.from_config(CONFIG)
    scheduler.set_timesteps(10)
    loop = c.latents.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            loop = scheduler.step(unet(loop, t).sample, t, loop).prev_sample
    assert peers.relative_rms(x, loop) < 1e-12
    assert peers.relative_rms(x, c.sequential()) < COEFFICIENT_FLOOR


def test_peer_ddpm_draws_our_step_noise(unet):
    """DDPM: the peer's own sequential run (parallel=1) and its converged parallel run equal ours."""
    c = peers.Comparison(unet, CONFIG, peers.Setting("DDPM-8", "ddpm", 8, 8), images=2, seed=1)
    seq = c.sequential()
    one, calls, _ = c.peer(tolerance=0.1, parallel=1)
    assert calls == 8
    assert peers.relative_rms(one, seq) < COEFFICIENT_FLOOR
    x, _, _ = c.peer(tolerance=1e-9)
    assert peers.relative_rms(x, seq) < COEFFICIENT_FLOOR
    c.seed = 5  # same latents, other step noise: far from it
    assert peers.relative_rms(c.peer(tolerance=1e-9)[0], seq) > 1e-3


def test_compare_records_sections_and_markdown(unet):
    setting = peers.Setting("DDIM-6", "ddim", 6, 6)
    records = peers.compare(unet, CONFIG, setting, images=1, repeats=1, peer_tolerances=(0.1, 0.01),
                            our_tols=(1e-1, 1e-7))
    assert [r["peer_tol"] for r in records] == [0.1, 0.01]
    for r in records:
        assert set(peers.COLUMNS) <= set(r), sorted(set(peers.COLUMNS) - set(r))
        assert r["status"] == "matched" and r["ours_error"] <= r["peer_error"]
        assert r["ours_calls"] == r["ours_depth"]  # one UNet wave per depth unit (M = 1, K = 1)
        assert r["peer_iterations"] == r["peer_depth"]
        assert r["baseline_gap"] < COEFFICIENT_FLOOR
        assert r["_search"] and all(s["status"] == "CONVERGED" for s in r["_search"])
    text = peers.markdown(records)
    assert "### DDIM-6: window 6, 1 images" in text and text.count("\n| 0.1 |") == 1
    assert "our depth" in text and "baseline_gap" not in text
    assert [title for title, _ in peers.sections(records)] == ["", "Same model, same noise"]
