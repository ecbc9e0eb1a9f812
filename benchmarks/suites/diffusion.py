"""Suite ``diffusion``: samplers × parallel methods on the bundled digits DDPM and on an exact GMM denoiser.

Samplers (the digits model's own DDPM schedule, 1000 linear betas):
DDPM-1000 (ancestral, pre-drawn noise), DDIM-50 and DDIM-25 (η = 0),
DPM-Solver++-50 and -25 (``DPMSolverMultistepScheduler``,
``algorithm_type="dpmsolver++"``, ``solver_order=2``).  Models: the bundled
digits UNet (``pitsolve.adapters.digits``) and
``GaussianMixtureDenoiser.random((1, 16, 16), 8)`` (the exact ε of an
8-component mixture, same schedule).  One image, the same noise for every
method (``torch.Generator().manual_seed(seed)``).

Methods are the data structure :data:`METHODS`: each is a Jacobian strategy,
an initialiser and a small grid of settings (N, window, M, strategy options)
searched on every sampler; per grid point the tolerance δ is the loosest
of :data:`TOLS` (bisected) whose sample is within :data:`ERROR_TARGET` (relative RMS) of
the sequential one, and the method's row is the grid point with the lowest
depth (then NFE), or the fastest single run for ``pick="wall"``.  Add a
configuration by appending a :class:`Method`.

Wall times: the chosen configurations of one (model, sampler) are timed in one
process, alternating with the sequential sampler (seq, m_1, seq, m_2, …, seq,
``repeats`` rounds), by ``parallel_sample`` / ``sequential_sample``; speed-up
= median sequential / median parallel time.  Fréchet distance (full mode,
digits only): the digits classifier's FID recipe on 64 images for the
sequential sampler and the fastest parallel method meeting the error target.

The parts live in :mod:`benchmarks.suites._diffusion`, one module per concern
(samplers and models, methods, search, measurement, report); this module is
the suite's face: its options, :func:`run`, :func:`sections` and
:func:`figures`.
"""

from __future__ import annotations

from typing import List, Tuple

from . import repeats
from ._diffusion.measure import BATCHES, FID_IMAGES, QUICK_BATCHES, batch_cost, measure_case
from ._diffusion.methods import METHODS, Method, grid_points
from ._diffusion.models import QUICK_SAMPLERS, SAMPLERS, Model, Sampler, load_models, sampler_kinds
from ._diffusion import report
from ._diffusion.report import figures, targets
from ._diffusion.search import (ERROR_TARGET, QUICK_TIME_CAP, QUICK_TOLS, TIME_CAP, TOLS, Case, choose,
                                loosest_passing, meets, search)

__all__ = ["BATCHES", "Case", "ERROR_TARGET", "FID_IMAGES", "METHODS", "Method", "Model", "QUICK_BATCHES",
           "QUICK_SAMPLERS", "QUICK_TIME_CAP", "QUICK_TOLS", "SAMPLERS", "Sampler", "TIME_CAP", "TOLS",
           "add_arguments", "choose", "figures", "grid_points", "loosest_passing", "meets", "run", "search",
           "sections"]

TITLE = "Parallel sampling of diffusion models: samplers × methods"
HIDDEN = ("model",)
HEADERS = {"sampler": "sampler", "method": "method", "config": "N / window / M / c / options", "tol": "tol δ",
           "worst_speedup": "worst repeat", "fid": "Fréchet d²", "meets_error_target": "error ≤ 1e-2", "time_per_call_ms": "ms / call",
           "time_per_sample_ms": "ms / sample", "relative_cost": "t(b)/t(1)", "efficiency": "b·t(1)/t(b)"}


# -- the suite -------------------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--diffusion-models", nargs="+", default=None, choices=("digits", "gmm"),
                        help="models of the diffusion suite (default both)")
    parser.add_argument("--diffusion-samplers", nargs="+", default=None, metavar="S",
                        help=f"samplers (default {', '.join(s.key for s in SAMPLERS)}; quick "
                             f"{', '.join(s.key for s in QUICK_SAMPLERS)}); KIND-T with KIND a sampler of the CLI's "
                             "--scheduler (DDPM, DDIM, DPM++, EULER, EULER-A, HEUN, UNIPC, …)")
    parser.add_argument("--diffusion-methods", nargs="+", default=None, metavar="M",
                        help=f"methods (default all: {', '.join(m.key for m in METHODS)})")
    parser.add_argument("--diffusion-fid-images", type=int, default=None, metavar="n",
                        help=f"images for the Fréchet distance (default {FID_IMAGES} in full mode, 0 in quick: off)")
    parser.add_argument("--diffusion-time-cap", type=float, default=None, metavar="S",
                        help=f"stop a measuring solve after S seconds (default {TIME_CAP:g}, quick {QUICK_TIME_CAP:g})")


def _samplers(names, quick) -> Tuple[Sampler, ...]:
    if not names:
        return QUICK_SAMPLERS if quick else SAMPLERS
    out = []
    for name in names:
        kind, _, steps = name.rpartition("-")
        if kind.lower() not in sampler_kinds() or not steps.isdigit():
            raise SystemExit(f"diffusion suite: sampler {name!r} is not KIND-T with KIND in "
                             f"{', '.join(k.upper() for k in sampler_kinds())}")
        out.append(Sampler(f"{kind.upper()}-{steps}", kind.lower(), int(steps)))
    return tuple(out)


def run(args) -> List[dict]:
    quick = bool(getattr(args, "quick", False))
    device = getattr(args, "device", "cpu")
    seed = getattr(args, "seed", 0)
    r = repeats(args, full=3, quick=1)
    cap = getattr(args, "diffusion_time_cap", None) or (QUICK_TIME_CAP if quick else TIME_CAP)
    fid_images = getattr(args, "diffusion_fid_images", None)
    fid_images = (0 if quick else FID_IMAGES) if fid_images is None else fid_images
    wanted = getattr(args, "diffusion_methods", None)
    unknown = set(wanted or ()) - {m.key for m in METHODS}
    if unknown:
        raise SystemExit(f"diffusion suite: unknown methods {sorted(unknown)}; choose from "
                         f"{', '.join(m.key for m in METHODS)}")
    methods = [m for m in METHODS if not wanted or m.key in wanted]
    models = load_models(getattr(args, "diffusion_models", None) or ("digits", "gmm"), device)
    samplers = _samplers(getattr(args, "diffusion_samplers", None), quick)

    records: List[dict] = []
    for model in models:
        records += batch_cost(model, device, QUICK_BATCHES if quick else BATCHES, 5 if quick else 15)
    for model in models:
        for sampler in samplers:
            print(f"[diffusion] {model.key} {sampler.key}", flush=True)
            case = Case(model, sampler, device, seed, cap)
            records += measure_case(case, methods, quick, r, fid_images if model.key == "digits" else 0)
    # The targets first, then the methods' tables, the batch costs, the Fréchet distances and the searches.
    rank = lambda r: (0 if r.get("_main") else 1 if r["table"].startswith("batch") else  # noqa: E731
                      2 if r["table"].startswith("Fréchet") else 3)
    return targets(records) + sorted(records, key=rank)


def sections(records: List[dict], args) -> List[tuple]:
    intro = __doc__.split("\n\n", 1)[1].split("\n\nThe parts live")[0].strip()  # the paragraphs on the suite
    return report.sections(records, args, intro)
