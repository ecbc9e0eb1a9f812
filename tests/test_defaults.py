"""The samplers' defaults: resolved from the sampler registry, recorded in the Solution, batch-aware tuning.

Also the option groups (``SampleSetup``, ``Conditioning``, ``SolveOptions``) that ``parallel_sample``,
``sequential_sample``, ``build_system`` and the pipeline share.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, TCDScheduler

import pitsolve
from pitsolve import InputTypeError
from pitsolve.adapters.diffusers import (
    ParallelDiffusionPipeline,
    SolveOptions,
    build_system,
    parallel_sample,
    sequential_sample,
)
from pitsolve.adapters.diffusion.rules.registry import GENERIC_DEFAULTS, SAMPLERS, defaults_for, sampler
from pitsolve.extend import clear_tuning_cache

from conftest import gen
from diffusion_models import tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")
T = 6


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def test_every_named_sampler_of_the_issue_declares_evidence_backed_defaults():
    for name in ("ddpm", "ddim", "dpmsolver++", "euler", "unipc", "flowmatch"):
        d = sampler(name).defaults
        assert d is not None and d.jacobian in pitsolve.jacobians.REGISTRY and d.preconditioning_steps >= 0
        assert isinstance(d.window, pitsolve.AutoWindow)
        assert "benchmarks/results/defaults.md" in d.evidence
    assert defaults_for(TCDScheduler()) == ("generic", GENERIC_DEFAULTS)  # no entry: the generic defaults
    assert defaults_for(DDIMScheduler())[0] == "ddim"
    assert [e.name for e in SAMPLERS].count("flowmatch") == 1


def test_defaults_are_resolved_and_recorded(unet):
    """No solve option: the scheduler's registry defaults, each recorded with its source; a given one says so."""
    d = sampler("ddim").defaults
    _, sol = parallel_sample(unet, DDIMScheduler(), num_inference_steps=T, generator=gen(0), shape=(1, 1, 8, 8))
    assert sol.settings["jacobian"] == f"{d.jacobian!r} (default of ddim)"
    assert sol.settings["preconditioning_steps"] == f"{d.preconditioning_steps!r} (default of ddim)"
    assert sol.settings["window"] == f"{d.window!r} (default of ddim)"
    assert sol.settings["defaults_evidence"] == d.evidence
    assert int(sol.settings["window_chosen"]) == sol.tuning["window"]
    assert "settings:" in str(sol) and "default of ddim" in str(sol)
    _, given = parallel_sample(unet, DDIMScheduler(), num_inference_steps=T, generator=gen(0), shape=(1, 1, 8, 8),
                               window=3, jacobian="identity")
    assert given.settings["window"] == "3 (given)" and given.settings["jacobian"] == "'identity' (given)"
    assert given.tuning is None and given.settings["window_chosen"] == "3"


def test_a_recorded_run_repeats_exactly(unet):
    """The settings of a default run, passed back explicitly, give the same sample and sweeps."""
    kw = dict(num_inference_steps=T, shape=(2, 1, 8, 8))
    x, sol = parallel_sample(unet, DDPMScheduler(), generator=gen(1), **kw)
    d = sampler("ddpm").defaults
    y, again = parallel_sample(unet, DDPMScheduler(), generator=gen(1), jacobian=d.jacobian,
                               preconditioning_steps=d.preconditioning_steps,
                               window=int(sol.settings["window_chosen"]), **kw)
    assert torch.equal(x, y) and again.iterations == sol.iterations


def test_options_object_and_flat_are_one_definition(unet):
    kw = dict(num_inference_steps=T, generator=None, shape=(1, 1, 8, 8))
    a, sa = parallel_sample(unet, DDIMScheduler(), **{**kw, "generator": gen(2)},
                            options=SolveOptions(window=2, jacobian="identity", tol=1e-4))
    b, sb = parallel_sample(unet, DDIMScheduler(), **{**kw, "generator": gen(2)}, window=2, jacobian="identity",
                            tol=1e-4)
    assert torch.equal(a, b) and sa.iterations == sb.iterations
    with pytest.raises(InputTypeError, match=r"got window= and a SolveOptions object; pass window in the object"):
        parallel_sample(unet, DDIMScheduler(), **kw, options=SolveOptions(), window=2)
    with pytest.raises(InputTypeError, match=r"parallel_sample got an unexpected option 'windw'; its options are"):
        parallel_sample(unet, DDIMScheduler(), **kw, windw=2)
    with pytest.raises(InputTypeError, match=r"options is a dict; pass a SolveOptions\(...\) or None"):
        parallel_sample(unet, DDIMScheduler(), **kw, options={"window": 2})
    with pytest.raises(InputTypeError, match=r"build_system got an unexpected option 'window'"):
        build_system(unet, DDIMScheduler(), **kw, window=2)
    # The sequential sampler takes (and ignores) every solve option, so one set of arguments drives both.
    seq, _ = sequential_sample(unet, DDIMScheduler(), **{**kw, "generator": gen(2)}, window=2, jacobian="secant",
                               guard=False, trajectory=False)
    assert (a - seq).abs().max() < 1e-3


def test_max_batch_splits_calls_without_changing_the_sample(unet):
    kw = dict(num_inference_steps=T, shape=(3, 1, 8, 8), window=4, jacobian="identity", tol=1e-6)
    x, s1 = parallel_sample(unet, DDPMScheduler(), generator=gen(3), **kw)
    y, s2 = parallel_sample(unet, DDPMScheduler(), generator=gen(3), max_batch=2, **kw)
    assert s1.iterations == s2.iterations
    torch.testing.assert_close(x, y, rtol=0, atol=1e-10)  # float64 model: only summation order may differ


def test_window_tuning_is_batch_and_model_aware(unet):
    """The tuner's cache key names the batch (state size), the model and the executor; its cost is shown once."""
    clear_tuning_cache()
    kw = dict(num_inference_steps=T, generator=None)
    runs = {}
    for key, (model, batch) in {"one": (unet, 1), "again": (unet, 1), "batch": (unet, 4),
                                "other model": (tiny_unet(seed=1), 1)}.items():
        _, sol = parallel_sample(model, EulerDiscreteScheduler(), **{**kw, "generator": gen(4)},
                                 shape=(batch, 1, 8, 8), throw=False)
        runs[key] = sol.tuning
    assert not runs["one"]["cached"] and runs["one"]["seconds"] > 0
    assert runs["again"]["cached"] and runs["again"]["seconds"] == 0.0 and runs["again"]["calls"] == 0
    assert not runs["batch"]["cached"] and not runs["other model"]["cached"]
    assert runs["one"]["executor"] == "LocalExecutor()"


def test_pipeline_passes_every_solve_option_through(unet):
    pipe = ParallelDiffusionPipeline(unet=unet, scheduler=DDIMScheduler())
    out = pipe(num_inference_steps=T, generator=gen(5), output_type="latent", guard=False, window=2,
               max_iters=T, trajectory=False, throw=True)
    assert out.solution.settings["guard"] == "None"  # resolved: no guard and out.solution.settings["window"] == "2 (given)"
    assert out.solution.ys[0].shape[0] == 2  # trajectory=False: X_0 and X_N only
    with pytest.raises(InputTypeError, match=r"the pipeline sets shape itself; pass batch_size, height and width"):
        pipe(num_inference_steps=T, shape=(1, 1, 8, 8), output_type="latent")


def test_sampler_solve_options_cover_the_core_ones():
    """The sampler's SolveOptions carry every field of pitsolve.SolveOptions (devices sit in SampleSetup; a
    per-sweep callback needs pitsolve.solve on build_system's system), so the two cannot drift apart."""
    from dataclasses import fields

    from pitsolve.adapters.diffusers import SampleSetup

    core = {f.name for f in fields(pitsolve.SolveOptions)}
    ours = {f.name for f in fields(SolveOptions)} | {f.name for f in fields(SampleSetup)}
    assert core - ours == {"callback"}


def test_default_window_under_an_executor_that_cannot_time_is_all_n():
    """window="auto" times the model in one process; under another executor the default is all N, the
    same on every rank (a DistributedExecutor refuses "auto")."""
    from pitsolve.adapters.diffusers.options import resolve

    class Ranks(pitsolve.Executor):
        def run(self, call, x, indices, tangents=None):
            raise AssertionError("not called")

    opts, record = resolve(SolveOptions(executor=Ranks()), DDIMScheduler())
    assert opts.window is None and record["window"].startswith("None (default of ddim under Ranks")
    opts, _ = resolve(SolveOptions(executor=pitsolve.LocalExecutor()), DDIMScheduler())
    assert opts.window == sampler("ddim").defaults.window
