"""Pictures of a parallel solve (matplotlib): residual heat map, error curves, x̂_0 strips, image grids.

Each function writes one PNG and returns its path.  They read only a
:class:`pitsolve.Solution` (or plain tensors), so they work for any system.
The figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot, so importing
this module leaves pyplot's backend (a notebook's, say) as it was.  Needs the extra
``pitsolve[plots]`` (matplotlib, Pillow).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

from ._extras import require_extra

require_extra("plots", "matplotlib", "PIL", user="pitsolve.adapters.plots")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

import pitsolve  # noqa: E402

__all__ = ["residual_heatmap", "error_curves", "x0_strip", "image_grid", "save_image_grid"]


def residual_heatmap(solution: pitsolve.Solution, path: Path, tol: Optional[float] = None, title: str = "") -> Path:
    """Stopping measure (Eq. 14) of every point in every iteration: iterations × points, log colour scale.

    Points outside the window of an iteration are blank; the black line is the
    accepted front after each iteration.
    """
    N, K = solution.num_intervals, len(solution.point_residuals)
    grid = np.full((K, N), np.nan)
    for k, (start, ratios) in enumerate(zip(solution.window_starts, solution.point_residuals)):
        r = ratios.double().numpy()
        grid[k, start : start + r.size] = r
    tiny = np.nanmin(grid[grid > 0]) if np.any(grid > 0) else 1e-16
    grid = np.where(grid > 0, grid, tiny)
    fig = Figure(figsize=(8, 3.5 + 0.05 * K))
    ax = fig.subplots()
    img = ax.imshow(np.log10(grid), aspect="auto", origin="upper", cmap="viridis", interpolation="nearest",
                    extent=(0.5, N + 0.5, K + 0.5, 0.5))
    ax.step(solution.accepted, np.arange(1, K + 1), where="mid", color="black", lw=1.2, label="accepted front")
    bar = fig.colorbar(img, ax=ax)
    bar.set_label("log10 RMS(ΔX_n) / s_n" + (f"   (tol = {tol:g})" if tol else ""))
    ax.set_xlabel("point n")
    ax.set_ylabel("iteration k")
    ax.set_title(title or f"{solution.jacobian}: residual per point per iteration")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def error_curves(curves: Dict[str, Sequence[float]], path: Path, title: str = "", ylabel: str = "error") -> Path:
    """One line per strategy: error (log scale) against iteration."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, errs in curves.items():
        e = np.asarray([x if (x is not None and math.isfinite(x)) else np.nan for x in errs], dtype=float)
        e = np.where(e > 0, e, np.nan)
        ax.semilogy(np.arange(1, e.size + 1), e, marker="o", ms=3, label=name)
    ax.set_xlabel("iteration k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[n, C, H, W]`` in [-1, 1] → ``[n, H, W, C]`` uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, columns: Optional[int] = None, scale: int = 4) -> Image.Image:
    """Tile ``[n, C, H, W]`` images in [-1, 1] into one PIL image (nearest-neighbour upscaled)."""
    arr = _to_uint8(images)
    n, h, w, c = arr.shape
    cols = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_image_grid(images: torch.Tensor, path: Path, columns: Optional[int] = None) -> Path:
    image_grid(images, columns).save(path)
    return Path(path)


def x0_strip(frames: Sequence[torch.Tensor], path: Path, title: str = "") -> Path:
    """The clean-sample prediction x̂_0 after each iteration, left to right (as the paper's Figures 2–7).

    ``frames`` are ``[C, H, W]`` images in [-1, 1], one per iteration.
    """
    frames = list(frames)
    fig = Figure(figsize=(1.2 * len(frames) + 0.5, 1.8))
    axes = fig.subplots(1, len(frames), squeeze=False)
    for k, (ax, f) in enumerate(zip(axes[0], frames)):
        arr = _to_uint8(f.unsqueeze(0))[0]
        ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"k={k + 1}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
