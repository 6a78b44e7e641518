"""PNG figures of a battery (matplotlib, Agg backend, small files)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

#: Attack families on the recovery and metric curves: record filter -> legend label.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("scattered", "random-modify (scattered values)"),
    ("contiguous", "random-modify (contiguous runs)"),
    ("whole", "replace/zero-tensor (whole tensors)"),
)
_COLORS = {"scattered": "tab:red", "contiguous": "tab:blue", "whole": "tab:green"}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("paramseal eval plots", "eval") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write the figure as a PNG atomically: an interrupt or a full disk leaves no cut-short figure."""
    from .._paths import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")  # the temporary name has no .png to infer it from


def family(r: dict[str, Any]) -> str | None:
    """Which curve a run belongs to (None: not a rate sweep)."""
    o = r.get("options", {})
    if r.get("kind") == "random-modify":
        return "contiguous" if o.get("contiguous") else "scattered"
    if r.get("kind") in ("replace-tensor", "zero-tensor") and "fraction" in o:
        return "whole"
    return None


def _sweep(runs: Sequence[dict[str, Any]], fam: str) -> list[tuple[float, float, float]]:
    """(mean tampering rate, bit-exact success rate, mean fraction restored) per strength."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if family(r) == fam and "tampering_rate" in r:  # the seeds of one attack at one strength
            groups[(r["kind"], float(r["options"]["fraction"]))].append(r)
    out = []
    for _, rs in sorted(groups.items()):
        rate = sum(r["tampering_rate"] for r in rs) / len(rs)
        ok = sum(bool(r.get("recovered")) for r in rs) / len(rs)
        fr = [r["fraction_restored"] for r in rs if r.get("fraction_restored") is not None]
        out.append((rate, ok, sum(fr) / len(fr) if fr else 0.0))
    return sorted(set(out))


def recovery_curves(
    runs: Sequence[dict[str, Any]], configs: Sequence[dict[str, Any]], model: str, dtype: str, path: Path
) -> bool:
    """Recovery rate against tampering rate, one panel per level, bounds drawn; False if no data."""
    levels = [c for c in configs if c["model"] == model and c["dtype"] == dtype]
    if not levels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(levels), figsize=(max(6.4, 3.3 * len(levels)), 3.1), sharey=True, squeeze=False)
    for ax, c in zip(axes[0], levels, strict=True):
        mine = [r for r in runs if r["model"] == model and r["dtype"] == dtype and r["level"] == c["level"]]
        for fam, name in FAMILIES:
            pts = _sweep(mine, fam)
            if pts:
                xs = [p[0] for p in pts]
                ax.plot(xs, [p[1] for p in pts], "o-", color=_COLORS[fam], ms=3, lw=1.2, label=name)
                ax.plot(xs, [p[2] for p in pts], ":", color=_COLORS[fam], lw=1)
        if "contiguous_bound" in c:  # the bounds of the code this configuration was sealed with
            ax.axvline(c["contiguous_bound"], color="k", lw=1, label="bound of the sealed code: contiguous")
            ax.axvline(c["scattered_bound"], color="k", lw=1, ls="--", label="bound of the sealed code: scattered")
        ax.set_xscale("log")
        ax.set_xlim(2e-4, 0.6)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{model} {dtype} {c['level']} (k={c['k']}, {c.get('code', 'code not recorded')})", fontsize=8)
        ax.set_xlabel("fraction of parameters changed", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("bit-exact recovery rate\n(dotted: fraction restored)", fontsize=7)
    entries: dict[str, Any] = {}  # from every panel: the first may have no sweep (minilm F16 light)
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(lab, h)
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=3, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    _save(fig, path)
    plt.close(fig)
    return True


def metric_curves(runs: Sequence[dict[str, Any]], config: dict[str, Any], metric: str, path: Path) -> bool:
    """Task metric against tampering rate, attacked and recovered, for one model/dtype/level."""
    mine = [
        r
        for r in runs
        if r["model"] == config["model"] and r["dtype"] == config["dtype"] and r["level"] == config["level"]
    ]
    if not any(family(r) for r in mine):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for fam, name in FAMILIES:
        rs = sorted((r for r in mine if family(r) == fam and "metric_attacked" in r), key=lambda r: r["tampering_rate"])
        if not rs:
            continue
        xs = [r["tampering_rate"] for r in rs]
        ax.plot(
            xs,
            [r["metric_attacked"][metric] for r in rs],
            "x--",
            color=_COLORS[fam],
            ms=4,
            lw=0.8,
            label=f"{name}: attacked",
        )
        rec = [(x, r["metric_recovered"][metric]) for x, r in zip(xs, rs, strict=True) if "metric_recovered" in r]
        if rec:
            ax.plot(
                [p[0] for p in rec],
                [p[1] for p in rec],
                "o-",
                color=_COLORS[fam],
                ms=3,
                lw=1,
                label=f"{name}: after recover",
            )
    ax.axhline(config["metric_sealed"][metric], color="gray", lw=0.8, label="sealed, untampered")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of parameters changed", fontsize=7)
    ax.set_ylabel(metric, fontsize=7)
    ax.set_title(f"{config['model']} {config['dtype']} {config['level']}: {metric}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=5, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def heatmap(run: dict[str, Any], path: Path) -> bool:
    """Localisation map of one run: a row per tensor, columns are position bins of its blocks."""
    rows = run.get("heat")
    if not rows:
        return False
    plt = _plt()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    width = max(len(r["codes"]) for r in rows)
    grid = [r["codes"] + [-1] * (width - len(r["codes"])) for r in rows]
    colors = ["white", "#f2f2f2", "tab:green", "tab:orange", "tab:red"]
    cmap = ListedColormap(colors)
    per_row = 0.16 if len(rows) <= 40 else 0.09  # MiniLM has 104 tensors: keep the PNG small
    fig, ax = plt.subplots(figsize=(6.0, 0.6 + per_row * len(rows)))
    ax.imshow([[c + 1 for c in g] for g in grid], cmap=cmap, vmin=0, vmax=4, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["tensor"] for r in rows], fontsize=5 if len(rows) <= 40 else 3.5)
    ax.set_xticks([])
    ax.set_xlabel("position in tensor (bins of 64-value blocks)", fontsize=7)
    ax.set_title(f"{run['model']} {run['dtype']} {run['level']}: {run['label']} (seed {run['seed']})", fontsize=8)
    legend = [
        Patch(color=colors[2], label="tampered, flagged"),
        Patch(color=colors[3], label="flagged, not tampered"),
        Patch(color=colors[4], label="tampered, missed"),
    ]
    ax.legend(
        handles=legend,
        fontsize=5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 / (0.6 + per_row * len(rows))),
        ncol=3,
        frameon=False,
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True
