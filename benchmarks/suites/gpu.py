"""Suite ``gpu``: the diffusion and peers suites on CUDA, and the batch cost of an SD2-sized UNet.

When ``torch.cuda.is_available()``:

* the ``diffusion`` and ``peers`` suites run with ``device="cuda"`` (their own
  options and ``--quick`` apply); their tables appear here prefixed by the suite;
* one batched call of a Stable-Diffusion-v2-sized ``UNet2DConditionModel``
  (random weights, fp16: block_out_channels (320, 640, 1280, 1280),
  cross_attention_dim 1024, attention_head_dim (5, 10, 20, 20),
  use_linear_projection, 4 × 64 × 64 latents, 77 text tokens) is timed for
  batch 1 … 256: time per call and per sample — how many window points a
  sweep can evaluate for the price of one.

Without CUDA the suite writes one record saying it was skipped and why.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Mapping, Sequence

import torch

from . import error_text, load, median_time

TITLE = "GPU: diffusion and peers on CUDA, batch cost of an SD2-sized UNet"
DEVICE = "cuda"
HEADERS = {"time_per_call_ms": "ms / call", "time_per_sample_ms": "ms / sample", "relative_cost": "t(b)/t(1)",
           "efficiency": "b·t(1)/t(b)"}
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_BATCHES = (1, 8, 64)
SUITES = ("diffusion", "peers")

#: Stable Diffusion 2's UNet (stabilityai/stable-diffusion-2), built with random weights.
SD2_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
TEXT_TOKENS = 77


def add_arguments(parser):
    parser.add_argument("--gpu-batches", nargs="+", type=int, default=None, metavar="B",
                        help=f"batches of the SD2-sized UNet (default {BATCHES}, quick {QUICK_BATCHES})")
    parser.add_argument("--gpu-suites", nargs="*", default=None, choices=SUITES,
                        help="suites to run on CUDA before the UNet curve (default both)")


def run(args) -> List[dict]:
    if not torch.cuda.is_available():
        why = ("torch.cuda.is_available() is False: " +
               (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                else f"no CUDA device is visible (torch {torch.__version__}, CUDA {torch.version.cuda})"))
        print(f"[gpu] skipped: {why}", flush=True)
        return [{"table": "gpu", "status": "skipped", "reason": why}]
    quick = bool(getattr(args, "quick", False))
    sub = argparse.Namespace(**{**vars(args), "device": "cuda"})
    records: List[dict] = []
    wanted = getattr(args, "gpu_suites", None)
    for name in (SUITES if wanted is None else wanted):
        try:
            module = load(name)
        except Exception as err:
            records.append({"table": "gpu", "suite": name, "status": f"skipped: {error_text(err)}"})
            continue
        try:
            for r in module.run(sub):
                records.append({**r, "table": f"{name} on cuda: {r.get('table', 'results')}", "_suite": name,
                                "_table": r.get("table", "results")})
        except Exception as err:
            records.append({"table": "gpu", "suite": name, "status": error_text(err)})
    batches = getattr(args, "gpu_batches", None) or (QUICK_BATCHES if quick else BATCHES)
    records += unet_batch_cost(SD2_UNET, "cuda", torch.float16, batches, reps=3 if quick else 10)
    return records


def unet_batch_cost(config: Mapping, device: str, dtype: torch.dtype, batches: Sequence[int], reps: int,
                    label: str = "SD2-sized UNet2DConditionModel") -> List[dict]:
    """Time of one call of a ``UNet2DConditionModel(**config)`` (random weights) vs batch size."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).to(device=device, dtype=dtype).eval()
    params = sum(p.numel() for p in unet.parameters())
    size = config["sample_size"]
    table = f"batch cost: {label} ({params / 1e6:.0f} M parameters, {dtype}, {device})"
    rows, first = [], None
    for b in batches:
        row = {"table": table, "batch": b}
        try:
            x = torch.randn((b, config["in_channels"], size, size), device=device, dtype=dtype)
            t = torch.full((b,), 500, device=device, dtype=torch.long)
            text = torch.randn((b, TEXT_TOKENS, config["cross_attention_dim"]), device=device, dtype=dtype)
            with torch.no_grad():
                seconds = median_time(lambda: unet(x, t, encoder_hidden_states=text), reps, device, warmup=2)
        except torch.cuda.OutOfMemoryError as err:
            rows.append({**row, "status": error_text(err)})
            torch.cuda.empty_cache()
            break
        first = first or (b, seconds)
        rows.append({**row, "status": "ok", "time_per_call_ms": 1e3 * seconds, "time_per_sample_ms": 1e3 * seconds / b,
                     "relative_cost": seconds / first[1], "efficiency": (b / first[0]) * first[1] / seconds})
        print(f"[gpu] {label} batch {b}: {1e3 * seconds:.1f} ms per call", flush=True)
        del x, t, text
    del unet
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def _delegated(records: Sequence[dict], name: str) -> List[dict]:
    """A delegated suite's records with their own table names back."""
    return [{**r, "table": r["_table"]} for r in records if r.get("_suite") == name]


def sections(records: Sequence[dict], args) -> List[tuple]:
    out = [("", __doc__.split("\n\n", 1)[1].strip())]
    for name in SUITES:
        mine = _delegated(records, name)
        if not mine:
            continue
        try:
            module = load(name)
        except Exception:
            continue
        if hasattr(module, "sections"):
            out += [(f"{name} on cuda: {title}" if title else f"{name} on cuda", body)
                    for title, body in module.sections(mine, args)]
    curve = [r for r in records if "time_per_call_ms" in r and r.get("_suite") is None]
    if curve:
        best = max(curve, key=lambda r: r["efficiency"])
        flat = [r["batch"] for r in curve if r["relative_cost"] <= 2.0]
        out.append(("SD2-sized UNet: does batching pay?", (
            f"A call of batch {curve[-1]['batch']} costs {curve[-1]['relative_cost']:.1f}× a call of batch "
            f"{curve[0]['batch']}; up to batch {max(flat)} a call costs at most twice batch {curve[0]['batch']}. "
            f"The most samples per unit time came at batch {best['batch']} ({best['efficiency']:.1f} samples for "
            f"the price of one). A window of p points (× images × 2 with classifier-free guidance) is one call of "
            "that many rows per fine step, so windows up to the flat part of this curve cost little more wall "
            "time per sweep than the sequential step.")))
    return out


def figures(records: Sequence[dict], args) -> Dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import _record

    out = {}
    for name in SUITES:
        mine = _delegated(records, name)
        if not mine:
            continue
        try:
            module = load(name)
            figs = module.figures(mine, args) if hasattr(module, "figures") else _record.default_figures(mine)
        except Exception:
            continue
        out.update({f"{name}_{key}": fig for key, fig in figs.items()})
    curve = [r for r in records if "time_per_call_ms" in r and r.get("_suite") is None]
    if curve:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        b = [r["batch"] for r in curve]
        ax.plot(b, [r["time_per_call_ms"] for r in curve], marker="o", label="per call")
        ax.plot(b, [r["time_per_sample_ms"] for r in curve], marker="s", label="per sample")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("ms")
        ax.set_title(curve[0]["table"], fontsize=7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["sd2_batch_cost"] = fig
    return out
