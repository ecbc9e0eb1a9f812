"""What every benchmark file states, and the writing of a suite's records (JSON, Markdown, PNG).

A suite returns plain records (``dict`` rows); this module turns them into
``<suite>.json`` (the header and the records), ``<suite>.md`` (the header, one
table per ``record["table"]`` and the suite's own sections) and the suite's
plots ``<suite>_<name>.png``, each carrying the header: the machine, the
device, the versions and the exact command (docs/design.md, "Measures": a wall time is only
read beside the baseline measured in the same run, on the stated machine).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent

#: Column headers for the measures every suite shares (docs/design.md, "Measures"); a suite adds its own with ``HEADERS``.
HEADERS = {
    "iterations": "iterations",
    "depth": "depth",
    "nfe": "NFE",
    "nfe_over_T": "NFE/T",
    "nfe_over_seq": "NFE/seq",
    "error": "error vs seq",
    "wall_s": "wall [s]",
    "seq_wall_s": "seq wall [s]",
    "speedup": "speedup seq/par",
    "ideal_speedup": "ideal T/depth",
    "status": "status",
}


# -- the header ------------------------------------------------------------------------------------------
def header(suite: str, command: str, device: str, quick: bool, options: Mapping) -> Dict:
    """Machine, device, versions, command and date of one suite's run."""
    return {
        "suite": suite,
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": bool(quick),
        "machine": machine(),
        "device": device_info(device),
        "versions": versions(),
        "options": {k: _plain(v) for k, v in options.items()},
    }


def machine() -> Dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
    }


def device_info(device: str) -> Dict:
    info = {"name": str(device), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        index = torch.device(device).index if str(device).startswith("cuda") else None
        info["cuda_name"] = torch.cuda.get_device_name(index or 0)
        info["cuda_version"] = torch.version.cuda
    return info


def versions() -> Dict:
    import diffusers

    import pitsolve

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "pitsolve": pitsolve.__version__,
        "git_commit": commit,
        "uncommitted_changes": dirty,
    }


def header_lines(h: Mapping) -> List[str]:
    """The header as Markdown bullet lines."""
    m, d, v = h["machine"], h["device"], h["versions"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"] or [])
    device = d["name"] + (f" ({d['cuda_name']}, CUDA {d.get('cuda_version')})" if d.get("cuda_name") else "")
    if d["name"].startswith("cuda") and not d.get("cuda_available"):
        device += " (requested; not available on this machine)"
    quick = " (quick mode: smoke-test sizes, not the reported figures)" if h["quick"] else ""
    return [
        f"- command: `{h['command']}`{quick}",
        f"- date: {h['date']}" + (f"; the suite ran {h['elapsed_s']:.0f} s" if "elapsed_s" in h else ""),
        f"- machine: {m['cpu']}, {m['cpu_count']} logical cores, torch threads {m['torch_threads']}, "
        f"{m['platform']}; load average at start {load or 'n/a'}",
        f"- device: {device}",
        f"- versions: Python {v['python']}, torch {v['torch']}, diffusers {v['diffusers']}, pitsolve {v['pitsolve']} "
        f"(git {v['git_commit']}{', uncommitted changes' if v['uncommitted_changes'] else ''})",
    ]


def header_oneline(h: Mapping) -> str:
    """The header in one line, for the foot of a figure."""
    m, d, v = h["machine"], h["device"], h["versions"]
    device = d["name"] + (f" ({d['cuda_name']})" if d.get("cuda_name") else "")
    return (f"{h['command']}  |  {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} threads  |  "
            f"device {device}  |  python {v['python']}, torch {v['torch']}, diffusers {v['diffusers']}, "
            f"pitsolve {v['pitsolve']} git {v['git_commit']}{'+' if v['uncommitted_changes'] else ''}  |  {h['date']}")


# -- tables ----------------------------------------------------------------------------------------------
def tables(records: Iterable[Mapping]) -> Dict[str, List[Mapping]]:
    """Records grouped by ``record["table"]`` (default ``"results"``), in order of first appearance."""
    out: Dict[str, List[Mapping]] = {}
    for r in records:
        out.setdefault(str(r.get("table", "results")), []).append(r)
    return out


def visible_columns(rows: Sequence[Mapping], hidden: Iterable[str] = ()) -> List[str]:
    """Keys shown in a table: all keys in order of first appearance, less ``table``, ``_``-prefixed and ``hidden``
    ones and those that are ``None`` in every row."""
    cols: List[str] = []
    hidden = set(hidden)
    for r in rows:
        for k in r:
            if k != "table" and not k.startswith("_") and k not in hidden and k not in cols:
                cols.append(k)
    return [c for c in cols if any(r.get(c) is not None for r in rows)]


def fmt(value) -> str:
    """One cell: ``—`` for missing, 3 significant digits, scientific for small or large magnitudes."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if abs(value) < 1e-2 or abs(value) >= 1e5:
            return f"{value:.1e}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping], headers: Mapping[str, str], hidden: Iterable[str] = ()) -> List[str]:
    cols = visible_columns(rows, hidden)
    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return lines


def markdown(h: Mapping, records: Sequence[Mapping], sections: Sequence[Tuple[str, str]],
             headers: Mapping[str, str], title: str, figures: Sequence[str], hidden: Iterable[str] = ()) -> str:
    lines = [f"# {title}{' (quick mode)' if h['quick'] else ''}", "", *header_lines(h), ""]
    lead = [s for s in sections if s[0] == ""]
    for _, body in lead:  # an untitled section is the introduction, above the tables
        lines += [body.rstrip(), ""]
    for name, rows in tables(records).items():
        lines += [f"## {name}", "", *markdown_table(rows, headers, hidden), ""]
    for name, body in sections:
        if name:
            lines += [f"## {name}", "", body.rstrip(), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------------------------
def write(out: Path, suite: str, h: Mapping, records: Sequence[Mapping], sections: Sequence[Tuple[str, str]] = (),
          figures: Optional[Mapping[str, object]] = None, headers: Optional[Mapping[str, str]] = None,
          title: Optional[str] = None, hidden: Iterable[str] = (),
          tabled: Optional[Sequence[Mapping]] = None) -> List[Path]:
    """Write ``<suite>.json``, ``<suite>.md`` and ``<suite>_<name>.png``; returns the paths written.

    ``tabled``: the records shown as Markdown tables (default all of ``records``; every record goes into the JSON).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    names = []
    for name, fig in (figures or {}).items():
        path = out / f"{suite}_{name}.png"
        save_figure(fig, path, h)
        names.append(path.name)
        written.append(path)
    data = {"header": dict(h), "records": [_plain(r) for r in records],
            "sections": {name or "introduction": body for name, body in sections}, "figures": names}
    (out / f"{suite}.json").write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    written.append(out / f"{suite}.json")
    md = markdown(h, records if tabled is None else tabled, sections, {**HEADERS, **(headers or {})},
                  title or f"Benchmark suite `{suite}`", names,
                  hidden)
    (out / f"{suite}.md").write_text(md)
    written.append(out / f"{suite}.md")
    return written


def default_figures(records: Sequence[Mapping], measures: Sequence[str] = ("depth", "speedup")) -> Dict[str, object]:
    """A bar chart of ``measures`` per row for every table whose records have them (suites without ``figures``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    for index, (name, rows) in enumerate(tables(records).items()):
        have = [m for m in measures if any(_number(r.get(m)) for r in rows)]
        if not have or len(rows) > 80:
            continue
        labels = [" ".join(fmt(v) for k, v in r.items() if isinstance(v, str) and k not in ("table", "status")
                           and not k.startswith("_"))[:40] or str(i) for i, r in enumerate(rows)]
        fig, axes = plt.subplots(1, len(have), figsize=(4 + 0.25 * len(rows) * len(have), 4), squeeze=False)
        for ax, m in zip(axes[0], have):
            ax.bar(range(len(rows)), [_number(r.get(m)) or 0.0 for r in rows])
            ax.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=6)
            ax.set_title(f"{name}: {HEADERS.get(m, m)}", fontsize=8)
            if m == "speedup":
                ax.axhline(1.0, color="k", lw=0.8)
        fig.tight_layout()
        figures[f"{index}_{_slug(name)}"] = fig
    return figures


def _number(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:40] or "table"


def save_figure(fig, path: Path, h: Mapping) -> None:
    import matplotlib.pyplot as plt

    fig.text(0.005, 0.003, header_oneline(h), fontsize=5, color="0.35", ha="left", va="bottom", wrap=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def _plain(value):
    """JSON-safe copy: tensors and numpy scalars to numbers, paths and other objects to strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
