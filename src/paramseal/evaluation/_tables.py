"""The Markdown tables of a battery's results: per-run rows, fidelity, recovery thresholds and the attack matrix.

Kept apart from :mod:`~paramseal.evaluation.report`, which writes the files, so that the page's text
(:mod:`~paramseal.evaluation._findings`) and the files share one set of tables and formatting helpers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..levels import bound_text
from . import plots

Rec = dict[str, Any]


def _mean(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.3g}%"


def _primary(model: str) -> str:
    return "cos_min" if model == "minilm" else "accuracy"


def _metric(m: dict[str, float] | None, model: str) -> str:
    if not m:
        return "–"
    if model == "minilm":
        return f"{m['cos_mean']:.5f} / {m['cos_min']:.5f}"
    return f"{100 * m['accuracy']:.1f}%"


def _configs(records: Sequence[Rec]) -> dict[str, Rec]:
    """Config records by id, ordered by model, dtype (F32, F16, BF16) and level (light, standard, strong)."""
    from ..levels import LEVELS
    from .models import MODELS

    dts = ["F32", "F16", "BF16"]

    def order(c: Rec) -> tuple[int, int, int]:
        m, d, lv = c["model"], c["dtype"], c["level"]
        return (
            MODELS.index(m) if m in MODELS else len(MODELS),
            dts.index(d) if d in dts else len(dts),
            LEVELS.index(lv) if lv in LEVELS else len(LEVELS),
        )

    cs = sorted((r for r in records if r.get("type") == "config"), key=order)
    return {c["id"]: c for c in cs}


def group(runs: Sequence[Rec]) -> dict[tuple[str, str, str, str], list[Rec]]:
    """Runs grouped over seeds by (model, dtype, level, attack label), in battery order."""
    g: dict[tuple[str, str, str, str], list[Rec]] = defaultdict(list)
    for r in runs:
        g[(r["model"], r["dtype"], r["level"], r["label"])].append(r)
    return g


def _loc(rs: Sequence[Rec], level: str, what: str) -> float | None:
    return _mean(r.get("localisation", {}).get(level, {}).get(what) for r in rs)


def _agg_metric(rs: Sequence[Rec], key: str) -> dict[str, float] | None:
    ms = [r[key] for r in rs if r.get(key)]
    if not ms:
        return None
    return {k: sum(m[k] for m in ms) / len(ms) for k in ms[0]}


def _row(rs: Sequence[Rec], cfg: Rec | None) -> list[str]:
    model = rs[0]["model"]
    live = [r for r in rs if "skipped" not in r]
    if not live:
        return ["skipped: " + rs[0]["skipped"].replace("|", "/")] + [""] * 10
    n = len(live)
    det = sum(bool(r.get("detected")) for r in live)
    noop = all(r.get("noop") for r in live)
    return [
        "none (no-op)" if noop else _pct(_mean(r.get("tampering_rate") for r in live)),
        f"{det}/{n} (false positive!)" if noop and det else (f"0/{n}: nothing to detect" if noop else f"{det}/{n}"),
        f"{_f(_loc(live, 'tensor', 'precision'), '.2f')} / {_f(_loc(live, 'tensor', 'recall'), '.2f')}",
        f"{_f(_loc(live, 'block', 'precision'), '.2f')} / {_f(_loc(live, 'block', 'recall'), '.2f')}",
        f"{_f(_loc(live, 'parameter', 'precision'), '.2f')} / {_f(_loc(live, 'parameter', 'recall'), '.2f')}",
        f"{sum(bool(r.get('recovered')) for r in live)}/{n}",
        _pct(_mean(r.get("fraction_restored") for r in live)),
        _metric(cfg["metric_sealed"] if cfg else None, model),
        _metric(_agg_metric(live, "metric_attacked"), model),
        _metric(_agg_metric(live, "metric_recovered"), model),
        f"{_mean(r.get('wall_s') for r in live) or 0:.2f}",
    ]


_HEAD = (
    "| attack | tampered | detected | tensor P / R | block P / R | param P / R | bit-exact recovered "
    "| restored | metric sealed | attacked | recovered | s/run |\n|" + "---|" * 12
)


def run_table(runs: Sequence[Rec], configs: dict[str, Rec], model: str, dtype: str, level: str) -> str:
    """Markdown table of every attack on one model/dtype/level (means over seeds)."""
    lines = [_HEAD]
    for (m, d, lv, lab), rs in group(runs).items():
        if (m, d, lv) == (model, dtype, level):
            lines.append(f"| {lab} | " + " | ".join(_row(rs, configs.get(f"config:{m}/{d}/{lv}"))) + " |")
    return "\n".join(lines)


def full_table(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    """Every model/dtype/level as one Markdown document (``results.md`` beside the JSON)."""
    out = ["# ParamSeal eval: every run (means over seeds)", ""]
    for c in configs.values():
        out += [
            f"## {c['model']} {c['dtype']} {c['level']} (k={c['k']})",
            "",
            run_table(runs, configs, c["model"], c["dtype"], c["level"]),
            "",
        ]
    return "\n".join(out)


def _impact(configs: dict[str, Rec]) -> str:
    lines = [
        "| model | dtype | level | k | max rel. change (bound) | measured | metric before sealing | sealed | change |",
        "|" + "---|" * 9,
    ]
    for c in configs.values():
        m, p = c["model"], _primary(c["model"])
        delta = c["metric_sealed"][p] - c["metric_original"][p]
        dtxt = f"{delta:+.6f}" if m == "minilm" else f"{100 * delta:+.1f} pts"
        lines.append(
            f"| {m} | {c['dtype']} | {c['level']} | {c['k']} | {bound_text(c['bound_relative_change'])} "
            f"| {c['measured_relative_change']:.2e} | {_metric(c['metric_original'], m)} "
            f"| {_metric(c['metric_sealed'], m)} | {dtxt} |"
        )
    return "\n".join(lines)


_Key = tuple[str, str, str, str]


def thresholds(runs: Sequence[Rec]) -> dict[_Key, tuple[float | None, float | None, tuple[int, int]]]:
    """Per (model, dtype, level, family): the largest rate recovered in every seed, and the smallest that failed.

    The largest counts only rates below the smallest failure: "recovered up to" says that every rate
    tested up to it recovered. The third item is how many of the seeds at that failing rate still
    recovered: (recovered, run).
    """
    g: dict[_Key, dict[tuple[str, float], list[Rec]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        fam = plots.family(r)
        if fam and "tampering_rate" in r:  # by attack and strength: a family holds two attacks at one fraction
            g[(r["model"], r["dtype"], r["level"], fam)][(r["kind"], r["options"]["fraction"])].append(r)
    out = {}
    for k, by_p in g.items():
        rate = {p: _mean(x["tampering_rate"] for x in rs) for p, rs in by_p.items()}
        ok = [rate[p] for p, rs in by_p.items() if all(x.get("recovered") for x in rs)]
        bad = [(rate[p], p) for p, rs in by_p.items() if not all(x.get("recovered") for x in rs)]
        fails = [(x, p) for x, p in bad if x is not None]
        first_fail, seeds = None, (0, 0)
        if fails:
            first_fail, p = min(fails)
            seeds = (sum(bool(x.get("recovered")) for x in by_p[p]), len(by_p[p]))
        best = max((x for x in ok if x is not None and (first_fail is None or x < first_fail)), default=None)
        out[k] = (best, first_fail, seeds)
    return out


def _fails_at(fail: float, seeds: tuple[int, int]) -> str:
    """'20% (2/3 seeds recovered)': a failing rate, and how many seeds it did not fail (shown for several seeds)."""
    ok, n = seeds
    return _pct(fail) + (f" ({ok}/{n} seeds recovered)" if n > 1 else "")


def _threshold_table(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    th = thresholds(runs)
    lines = [
        "| model | dtype | level | code | bound: contiguous | bound: scattered "
        "| scattered: all seeds recovered up to | fails at | contiguous runs: up to | fails at "
        "| whole tensors: up to | fails at |",
        "|" + "---|" * 12,
    ]
    for c in configs.values():
        key = (c["model"], c["dtype"], c["level"])
        cells = []
        for fam in ("scattered", "contiguous", "whole"):
            fk = (*key, fam)
            if fk not in th:
                cells += ["not tested", "–"]
                continue
            best, fail, seeds = th[fk]
            shown = _pct(fail) if fail is None else _fails_at(fail, seeds)
            cells += [_pct(best) if best is not None else "none", shown]
        if all(x in ("not tested", "–") for x in cells):
            continue
        lines.append(f"| {' | '.join(key)} | {' | '.join(_bound_cells(c))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bound_cells(c: Rec) -> list[str]:
    """The code a configuration was sealed with and that code's bounds, as its record gives them."""
    if "code" not in c:  # a record from before the battery noted the code
        return ["not recorded", "–", "–"]
    return [c["code"], _pct(c["contiguous_bound"]), _pct(c["scattered_bound"])]


def _matrix(runs: Sequence[Rec], configs: dict[str, Rec], model: str) -> str:
    cols = [(c["dtype"], c["level"]) for c in configs.values() if c["model"] == model]
    g = group([r for r in runs if r["model"] == model])
    labels = list(dict.fromkeys(k[3] for k in g))
    lines = ["| attack | " + " | ".join(f"{d} {lv}" for d, lv in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for lab in labels:
        cells = []
        for d, lv in cols:
            rs = [r for r in g.get((model, d, lv, lab), []) if "skipped" not in r]
            if not rs:
                cells.append("–")
                continue
            det = sum(bool(r.get("detected")) for r in rs)
            rec = sum(bool(r.get("recovered")) for r in rs)
            if all(r.get("noop") for r in rs):
                cells.append(f"no change; {len(rs) - det}/{len(rs)} verify intact")
            else:
                loc = _loc(rs, "block", "recall")
                cells.append(f"{det}/{len(rs)} det, loc {_f(loc, '.2f')}, **{rec}/{len(rs)}** rec")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
