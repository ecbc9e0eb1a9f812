"""Suite "peers": Diffusers' ParaDiGMS pipeline beside ``pitsolve`` on the same model and the same noise.

The peer is the real code, ``StableDiffusionParadigmsPipeline`` (Shih et al. 2023,
ParaDiGMS; module ``diffusers.pipelines.deprecated.stable_diffusion_variants.
pipeline_stable_diffusion_paradigms``), run in this process on the bundled
digits DDPM: its UNet is :class:`CountingUNet`, a thin wrapper of the digits
``UNet2DModel`` that ignores the (dummy) prompt embeddings and counts calls
and rows; it is driven with ``prompt_embeds``, ``guidance_scale=1`` and
``output_type="latent"`` (no VAE, text encoder or tokenizer is needed then),
with ``DDIMParallelScheduler`` / ``DDPMParallelScheduler`` built from the
digits scheduler config, at its tolerances 0.1, 0.05 and 0.01.

Same noise.  Both methods get the same initial latents (drawn from
``torch.Generator().manual_seed(seed)``) and a fresh generator seeded
``seed + 1`` for the per-step noise.  The peer pre-draws one sample-shaped
draw per step ``j = 0 … T−1`` from it (``randn_tensor``, in order, scaled by
``sqrt(_get_variance(t_j))``); ``pitsolve.adapters.diffusers.draw_noise``
draws one per step with ``t > 0`` in the same order, i.e. steps
``0 … T−2``: the same numbers.  The peer's last draw (step ``t = 0``) is
scaled by ``sqrt(1e-20)`` (its variance clamp) and changes the sample by
``1e-10``.  DDIM (η = 0) uses no step noise.  So both errors are measured
against one baseline, our :func:`~pitsolve.adapters.diffusers.sequential_sample`
with that noise; ``baseline_gap`` records how far the peer's own sequential
run (``parallel=1``: Diffusers' scheduler arithmetic one step at a time)
lies from it: rounding only, since Diffusers' schedulers form their
coefficients from float32 ``alphas_cumprod`` and ours in float64 (about
2e-7 relative for DDIM, 1e-5 for float32 DDPM-100).

The tolerances mean different things: the peer accepts a point when its
RMS change is at most ``tolerance`` times that step's own noise std
``sqrt(_get_variance(t_j))`` (DDIM: the η = 1 variance, 0 at the last step),
and also slides past the first failing point; ours when the RMS change is at
most ``tol·σ_{t_n}`` (Eq. 14), sliding past the leading run of passing points.

Measures (docs/design.md, "Measures").  Peer: ``iterations`` = its sweeps = UNet calls =
``depth``; NFE = rows evaluated / images.  Ours: ``Solution`` fields,
cross-checked by the wrapper (``ours_calls`` must equal ``ours_depth``).
Error = relative RMS ``‖x − x_seq‖ / ‖x_seq‖``.  For each peer tolerance,
ours runs at the loosest ``tol`` of a grid whose error is at most the
peer's, with the same window (``window`` = the peer's ``parallel``)
and the strategy, start and stopping scale of the :class:`Setting`.  Wall times are
medians over ``repeats`` rounds that alternate sequential, peer and ours in
one process.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import alternate, error_text, relative_rms, repeats

#: The peer's tolerances (its ``tolerance``: RMS change per step / that step's noise std).
PEER_TOLERANCES = (0.1, 0.05, 0.01)
#: Our ``tol`` grid, loosest first, searched for the matched error.
OUR_TOLS = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)
QUICK_OUR_TOLS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


@dataclass(frozen=True)
class Setting:
    """One sampler: ``"ddim"`` (η = 0) or ``"ddpm"`` with ``steps`` steps, both methods at ``window``.

    Ours runs ``jacobian`` (a registry name, built with ``jacobian_options``), ``M`` preconditioning
    steps (0: copy-forward, as the peer starts) and the stopping scale ``max(σ_t, scale_floor)``.
    """

    name: str
    sampler: str
    steps: int
    window: int
    jacobian: str = "identity"
    jacobian_options: Tuple[Tuple[str, object], ...] = ()
    M: int = 1
    scale_floor: Optional[float] = None

    def ours_text(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.jacobian_options)
        floor = "σ_t" if self.scale_floor is None else f"max(σ_t, {self.scale_floor:g})"
        return f"{self.jacobian}{f'({options})' if options else ''}, M={self.M}, scale {floor}"


FULL = (Setting("DDIM-50", "ddim", 50, 50, "secant", (("history", 2),), M=0, scale_floor=1.0),
        Setting("DDPM-1000", "ddpm", 1000, 64, scale_floor=1.0))
QUICK = (Setting("DDIM-50", "ddim", 50, 50, "secant", (("history", 2),), M=0, scale_floor=1.0),
         Setting("DDPM-100", "ddpm", 100, 32, scale_floor=1.0))


class CountingUNet(torch.nn.Module):
    """A UNet with the conditional call signature around an unconditional ``UNet2DModel``; counts its calls.

    ``forward(sample, timestep, encoder_hidden_states=None, cross_attention_kwargs=None,
    return_dict=True)`` ignores the conditioning, so the ParaDiGMS pipeline (which
    always passes prompt embeddings) and ``pitsolve`` (which passes none) run the
    same network.  ``calls`` counts model-call waves, ``rows`` the samples evaluated.
    """

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.config = unet.config
        self.calls = 0
        self.rows = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def reset(self) -> None:
        self.calls = self.rows = 0

    def forward(self, sample, timestep, encoder_hidden_states=None, cross_attention_kwargs=None, return_dict=True,
                **_ignored):
        self.calls += 1
        self.rows += sample.shape[0]
        return self.unet(sample, timestep, return_dict=return_dict)


def schedulers(sampler: str, config) -> Tuple[object, object]:
    """``(plain, parallel)`` Diffusers schedulers of ``sampler`` from ``config``: ours runs the plain one."""
    from diffusers import DDIMParallelScheduler, DDIMScheduler, DDPMParallelScheduler, DDPMScheduler

    classes = {"ddim": (DDIMScheduler, DDIMParallelScheduler), "ddpm": (DDPMScheduler, DDPMParallelScheduler)}
    if sampler not in classes:
        raise ValueError(f"sampler={sampler!r}; choose one of {sorted(classes)}.")
    config = {k: v for k, v in config.items() if k != "_use_default_values"}
    return tuple(cls.from_config(config) for cls in classes[sampler])


def paradigms_pipeline(unet: CountingUNet, parallel_scheduler):
    """Diffusers' ``StableDiffusionParadigmsPipeline`` around ``unet`` (no VAE, text encoder or safety checker)."""
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_paradigms import (
        StableDiffusionParadigmsPipeline,
    )

    pipe = StableDiffusionParadigmsPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=parallel_scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Comparison:
    """Both methods on one model, one sampler, one set of latents and step noise."""

    def __init__(self, unet: torch.nn.Module, scheduler_config, setting: Setting, *, images: int = 4, seed: int = 0):
        self.setting, self.seed = setting, seed
        self.unet = CountingUNet(unet)
        self.device = self.unet.device
        self.plain, parallel = schedulers(setting.sampler, scheduler_config)
        self.pipe = paradigms_pipeline(self.unet, parallel)
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size,) * 2
        shape = (images, cfg.in_channels, *size)
        self.latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=unet.dtype)
        self.latents = self.latents.to(self.device)
        self.embeds = torch.zeros(images, 1, 1, dtype=unet.dtype, device=self.device)

    def _noise(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + 1)

    def peer(self, tolerance: float, parallel: Optional[int] = None) -> Tuple[torch.Tensor, int, int]:
        """The peer's sample, its UNet calls and rows."""
        self.unet.reset()
        out = self.pipe(
            prompt_embeds=self.embeds, guidance_scale=1.0, output_type="latent",
            num_inference_steps=self.setting.steps, parallel=parallel or self.setting.window, tolerance=tolerance,
            latents=self.latents.clone(), generator=self._noise(),
        ).images
        return out, self.unet.calls, self.unet.rows

    def ours(self, tol: float):
        """Our sample, its :class:`~pitsolve.Solution` and the wrapper's calls and rows."""
        import pitsolve
        from pitsolve.adapters.diffusers import parallel_sample

        self.unet.reset()
        st = self.setting
        jacobian = pitsolve.jacobians.REGISTRY[st.jacobian](**dict(st.jacobian_options))
        x, sol = parallel_sample(
            self.unet, self.plain, num_inference_steps=st.steps, latents=self.latents,
            generator=self._noise(), window=st.window, tol=tol, jacobian=jacobian,
            preconditioning_steps=st.M, scale_floor=st.scale_floor,
        )
        return x, sol, self.unet.calls, self.unet.rows

    def sequential(self) -> torch.Tensor:
        from pitsolve.adapters.diffusers import sequential_sample

        return sequential_sample(
            self.unet, self.plain, num_inference_steps=self.setting.steps, latents=self.latents,
            generator=self._noise(),
        )[0]


def compare(
    unet: torch.nn.Module,
    scheduler_config,
    setting: Setting,
    *,
    images: int = 4,
    seed: int = 0,
    repeats: int = 1,
    peer_tolerances: Sequence[float] = PEER_TOLERANCES,
    our_tols: Sequence[float] = OUR_TOLS,
    log: Callable[[str], None] = lambda line: None,
) -> List[dict]:
    """One record per peer tolerance: the peer's measures, ours at matched error, and their ratios."""
    c = Comparison(unet, scheduler_config, setting, images=images, seed=seed)
    T, images = setting.steps, c.latents.shape[0]
    with torch.no_grad():
        seq = c.sequential()
        baseline_gap = relative_rms(c.peer(tolerance=0.1, parallel=1)[0], seq)
        log(f"[peers] {setting.name}: peer parallel=1 vs our sequential: {baseline_gap:.1e}")

        ours_at: Dict[float, dict] = {}

        def run_ours(tol: float) -> dict:
            if tol not in ours_at:
                x, sol, calls, rows = c.ours(tol)
                ours_at[tol] = dict(tol=tol, iterations=sol.iterations, depth=sol.depth, nfe_over_T=sol.nfe / T,
                                    error=relative_rms(x, seq), status=sol.status.name, calls=calls,
                                    rows_over_T=rows / (images * T))
                log(f"[peers]   ours tol={tol:g}: " + _fmt(ours_at[tol]))
            return ours_at[tol]

        records = []
        for tol in peer_tolerances:
            x, calls, rows = c.peer(tol)
            peer = dict(iterations=calls, depth=calls, nfe_over_T=rows / (images * T), error=relative_rms(x, seq))
            log(f"[peers]   peer tolerance={tol:g}: " + _fmt(peer))
            match = next((run_ours(t) for t in our_tols if run_ours(t)["error"] <= peer["error"]), None)
            status = "matched"
            if match is None:
                match = ours_at[our_tols[-1]]
                status = f"unmatched: error {match['error']:.1e} at the tightest tol {our_tols[-1]:g}"
            if match["status"] != "CONVERGED":
                status = match["status"]
            records.append({
                "table": f"{setting.name}: window {setting.window}, {images} images; ours: {setting.ours_text()}",
                "peer_tol": tol, **{f"peer_{k}": v for k, v in peer.items()},
                **{f"ours_{k}": v for k, v in match.items() if k != "status"},
                "depth_ratio": peer["depth"] / match["depth"],
                "status": status,
                "setting": setting.name, "sampler": setting.sampler, "steps": T, "window": setting.window,
                "images": images, "seed": seed, "device": str(c.device), "baseline_gap": baseline_gap,
                "_search": [dict(ours_at[t]) for t in our_tols if t in ours_at],
            })

        # Wall times: seq, peer, seq, ours, seq, … per round (each paired with the sequential runs beside it).
        contenders = {}
        for r in records:
            contenders[f"peer {r['peer_tol']}"] = lambda tol=r["peer_tol"]: c.peer(tol)
            contenders[f"ours {r['peer_tol']}"] = lambda tol=r["ours_tol"]: c.ours(tol)
        timing = alternate(c.sequential, contenders, repeats, str(c.device))
    for r in records:
        peer, ours = timing[f"peer {r['peer_tol']}"], timing[f"ours {r['peer_tol']}"]
        r.update(peer_wall_s=peer.median, ours_wall_s=ours.median, wall_ratio=peer.median / ours.median,
                 seq_wall_s=ours.baseline_median, peer_speedup=peer.speedup, ours_speedup=ours.speedup,
                 repeats=repeats)
    return [_ordered(r) for r in records]


def _fmt(m: dict) -> str:
    return f"iterations {m['iterations']} depth {m['depth']} NFE/T {m['nfe_over_T']:.2f} error {m['error']:.1e}"


#: Column order of the tables (the other keys follow, hidden or ``_``-prefixed).
COLUMNS = ("table", "peer_tol", "peer_iterations", "peer_depth", "peer_nfe_over_T", "peer_error", "peer_wall_s",
           "ours_tol", "ours_iterations", "ours_depth", "ours_nfe_over_T", "ours_error", "ours_wall_s",
           "depth_ratio", "wall_ratio", "seq_wall_s", "peer_speedup", "ours_speedup", "status")


def _ordered(r: dict) -> dict:
    return {**{k: r[k] for k in COLUMNS if k in r}, **{k: v for k, v in r.items() if k not in COLUMNS}}


# ----------------------------------------------------------------------------- runner interface

TITLE = "Peers: Diffusers' ParaDiGMS pipeline beside pitsolve (same model, same noise)"
HEADERS = {
    "peer_tol": "peer tol", "peer_iterations": "peer iters", "peer_depth": "peer depth",
    "peer_nfe_over_T": "peer NFE/T", "peer_error": "peer error", "peer_wall_s": "peer wall [s]",
    "ours_tol": "our tol δ", "ours_iterations": "our iters", "ours_depth": "our depth",
    "ours_nfe_over_T": "our NFE/T", "ours_error": "our error", "ours_wall_s": "our wall [s]",
    "depth_ratio": "depth peer/ours", "wall_ratio": "wall peer/ours", "seq_wall_s": "seq wall [s]",
    "peer_speedup": "peer speedup", "ours_speedup": "our speedup",
}
HIDDEN = ("ours_calls", "ours_rows_over_T", "setting", "sampler", "steps", "window", "images", "seed", "device",
          "baseline_gap", "repeats")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers-images", type=int, default=4, help="images per sample (default 4)")


def run(args) -> List[dict]:
    """Every setting of :data:`FULL` (or :data:`QUICK` with ``args.quick``) on the bundled digits DDPM."""
    from pitsolve.adapters.digits import load_pipeline

    quick = bool(getattr(args, "quick", False))
    try:
        # The peer's module imports transformers: without it, say so in a record rather than crash.
        import diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_paradigms  # noqa: F401
    except ImportError as err:
        return [{"table": "peers", "status": f"skipped: {error_text(err)}"}]
    digits = load_pipeline(getattr(args, "device", "cpu"))
    records = []
    for setting in QUICK if quick else FULL:
        records += compare(
            digits.unet, digits.scheduler.config, setting, images=getattr(args, "peers_images", 4),
            seed=getattr(args, "seed", 0), repeats=repeats(args, full=3, quick=1),
            our_tols=QUICK_OUR_TOLS if quick else OUR_TOLS, log=lambda line: print(line, flush=True),
        )
    return records


INTRODUCTION = (
    "Peer: Diffusers' `StableDiffusionParadigmsPipeline` (ParaDiGMS, its `batch_step_no_noise` schedulers "
    "`DDIMParallelScheduler` / `DDPMParallelScheduler`) driving the bundled digits UNet through a thin wrapper, "
    "at its tolerances 0.1, 0.05, 0.01 with `parallel` = window. Ours: `parallel_sample` with the strategy, "
    "start and stopping scale named in each table's title, at the same window and the loosest `tol` of a grid "
    "whose error is at most the peer's. Both start from the same latents and use the same per-step noise; error = relative RMS vs our "
    "`sequential_sample` with that noise. Peer iterations = its sweeps = UNet calls = depth; NFE = rows "
    "evaluated per image. Wall: median over rounds alternating sequential, peer and ours in one process; "
    "speedup = the sequential runs beside each / its own time."
)


def sections(records: Sequence[dict], args=None) -> List[Tuple[str, str]]:
    """The introduction, and how the noise is matched with each setting's baseline gap."""
    gaps = {r["setting"]: r["baseline_gap"] for r in records if "baseline_gap" in r}
    lines = [
        "Both methods get latents drawn from `Generator().manual_seed(seed)` and a fresh "
        "`Generator().manual_seed(seed + 1)` for the step noise. The peer pre-draws one sample-shaped draw per "
        "step j = 0 … T−1 (scaled by its `sqrt(_get_variance(t_j))`); `draw_noise` draws one per step with t > 0 "
        "in the same order, steps 0 … T−2: the same numbers (the peer's last draw is scaled by sqrt(1e-20)). "
        "DDIM (η = 0) uses no step noise. The peer's own sequential run (`parallel=1`) differs from our "
        "`sequential_sample` only by rounding (Diffusers' float32 scheduler coefficients, ours float64):",
        "",
        *[f"- {name}: relative RMS {gap:.1e}" for name, gap in gaps.items()],
        "",
        "The tolerances mean different things: the peer accepts a point when its RMS change is at most `tol` "
        "times that step's own noise std and also slides past the first failing point; ours when its RMS change "
        "is at most δ·σ_t (Eq. 14), sliding past the leading run of passing points.",
    ]
    return [("", INTRODUCTION), ("Same model, same noise", "\n".join(lines))]


def figures(records: Sequence[dict], args=None) -> Dict[str, object]:
    """Depth against error per setting: the peer at its three tolerances, ours over every ``tol`` tried."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["table"] for r in records if "peer_depth" in r))
    if not names:
        return {}
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in records if r.get("table") == name and "peer_depth" in r]
        ax.plot([r["peer_error"] for r in rows], [r["peer_depth"] for r in rows], "o-", label="ParaDiGMS (Diffusers)")
        for r in rows:
            ax.annotate(f"{r['peer_tol']:g}", (r["peer_error"], r["peer_depth"]), fontsize=6)
        ours = sorted({(s["error"], s["depth"], s["tol"]) for r in rows for s in r["_search"]})
        ax.plot([e for e, _, _ in ours], [d for _, d, _ in ours], "s--", label="pitsolve (tol grid)")
        ax.set_xscale("log")
        ax.set_xlabel("error vs sequential (relative RMS)")
        ax.set_ylabel("depth (model-call waves)")
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return {"depth_vs_error": fig}


def markdown(records: Sequence[dict]) -> str:
    """This suite's tables and notes as Markdown (what the runner writes, less the header)."""
    from .. import _record

    headers = {**_record.HEADERS, **HEADERS}
    intro, *rest = sections(records)
    lines = [intro[1], ""]
    for name, rows in _record.tables(records).items():
        lines += [f"### {name}", "", *_record.markdown_table(rows, headers, HIDDEN), ""]
    for title, body in rest:
        lines += [f"### {title}", "", body, ""]
    return "\n".join(lines)
