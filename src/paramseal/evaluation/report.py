"""Write a battery's outputs: raw JSON, a Markdown table, PNG plots and the ``docs/results.md`` page."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._paths import write_text
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
            f"| {m} | {c['dtype']} | {c['level']} | {c['k']} | {c['bound_relative_change']:.2e} "
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


def write_outputs(records: Sequence[Rec], out: Path, *, command: str, wall_s: float, battery: str) -> list[Path]:
    """Write ``results.json``, ``results.md`` and PNG plots into ``out``; returns the files written."""
    configs = _configs(records)
    runs = [r for r in records if r.get("type") == "run"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    raw = out / "results.json"
    write_text(raw, json.dumps({"battery": battery, "command": command, "records": list(records)}))
    table = out / "results.md"
    write_text(table, full_table(runs, configs))
    written += [raw, table]
    for model in dict.fromkeys(c["model"] for c in configs.values()):
        for dtype in dict.fromkeys(c["dtype"] for c in configs.values() if c["model"] == model):
            cs = [c for c in configs.values() if c["model"] == model and c["dtype"] == dtype]
            p = out / f"recovery_{model}_{dtype}.png"
            if plots.recovery_curves(runs, cs, model, dtype, p):
                written.append(p)
        cfg = next((c for c in configs.values() if c["model"] == model and c["level"] == "standard"), None)
        if cfg is not None:
            p = out / f"metric_{model}_{cfg['dtype']}_{cfg['level']}.png"
            if plots.metric_curves(runs, cfg, _primary(model), p):
                written.append(p)
        heat = [r for r in runs if r["model"] == model and r.get("heat")]
        pick = next((r for r in heat if r["label"] == "random-modify contiguous p=0.05"), heat[0] if heat else None)
        if pick is not None:
            p = out / f"heatmap_{model}.png"
            if plots.heatmap(pick, p):
                written.append(p)
    return written


def _rel(target: Path, page: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()
    except ValueError:  # another drive (Windows)
        return target.resolve().as_posix()


def write_page(
    records: Sequence[Rec], page: Path, figures: Sequence[Path], *, command: str, wall_s: float, battery: str
) -> Path:
    """Write the results page (``docs/results.md``) from the records and the figures beside it."""
    configs = _configs(records)
    runs = [r for r in records if r.get("type") == "run"]
    rel = {p.name: _rel(p, page) for p in figures if p.suffix == ".png"}
    raw = next((_rel(p, page) for p in figures if p.name == "results.json"), "results.json")
    table = next((_rel(p, page) for p in figures if p.name == "results.md"), "results.md")
    models = list(dict.fromkeys(c["model"] for c in configs.values()))
    from .models import get_model

    s: list[str] = []
    add = s.append
    add("# ParamSeal: measured tamper resilience\n")
    from .. import __version__

    add(
        f"*Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"paramseal {__version__}; battery `{battery}`: {len(runs)} attacked runs on {len(configs)} "
        "sealed configurations, "
        f"{wall_s / 60:.0f} min of sealing and attacked runs {_machines(configs)} (summed over "
        "resumed sessions; loading the models and their clean evaluations not counted). "
        "Do not edit by hand: rerun the command. Raw per-run records: "
        f"[`{raw}`]({raw}); every run as a table: [`{table}`]({table}).*\n"
    )
    add(
        "Every number below is measured by that command; none is copied from elsewhere. Attacks are "
        "seeded (the same seed changes the same bits); sealing draws a fresh random salt, so borderline "
        "points near a capacity bound can differ slightly between runs.\n"
    )
    add("## Headline\n")
    add(_headline(runs, configs) + "\n")
    add("## Models and metrics\n")
    for m in models:
        add(f"* **{m}**: {get_model(m).description}.")
    add(
        "\nEach model is measured as fp32 and cast to fp16 and bf16 (the metric is always computed in fp32 "
        "from the stored weights). Per run: *detected* (verify says not intact, or refuses the file); "
        "localisation *precision / recall* against the bits that really changed, at tensor level, block "
        "level (64-value blocks) and parameter level (after recovery: values restored, plus every value of "
        "blocks that could not be restored); *bit-exact recovered* (status recovered and every tensor "
        "byte-identical to the sealed model); *restored* (fraction of the changed values that recover put "
        "back exactly); the task metric of the sealed, attacked and recovered model; wall time.\n"
    )
    add(
        "Each run seals the model with the in-memory API (`paramseal.seal`), applies one seeded attack from "
        "`paramseal.attacks` (the same code as `paramseal attack`), then verifies and recovers the tensors in "
        "memory; truncation and header edits go through a file. To reproduce: "
        "`pip install 'paramseal[eval]'`, then run the command above "
        "(interrupt it at any time; rerunning it resumes, running the configuration cut short again whole).\n"
    )
    add("## 1. Embedding impact (fidelity)\n")
    add(
        "Maximum relative change over normal values, and the task metric before and after sealing "
        '("before sealing" is the model cast to that dtype; for minilm the metric is mean / min cosine '
        "against the fp32 original).\n"
    )
    add(_impact(configs) + "\n")
    clean = list(configs.values())
    fp_blocks = sum(c["clean_verify_flagged_blocks"] for c in clean)
    fp_runs = sum(c["clean_verify_status"] != "intact" for c in clean)
    blocks = sum(c["total_blocks"] for c in clean)
    noops = [r for r in runs if r.get("noop")]
    fp_noop = sum(bool(r.get("detected")) for r in noops)
    wrong = sum(
        r.get("localisation", {}).get("block", {}).get("flagged", 0)
        - r.get("localisation", {}).get("block", {}).get("hit", 0)
        for r in runs
    )
    flagged = sum(r.get("localisation", {}).get("block", {}).get("flagged", 0) for r in runs)
    add("## 2. False positives\n")
    add(
        f"* Untampered sealed copies: {fp_runs} of {len(clean)} verifies flagged anything "
        f"({fp_blocks} of {blocks} blocks): false-positive rate **{fp_runs}/{len(clean)}**."
    )
    if noops:
        add(
            f"* Attacks that changed nothing (e.g. an fp16 round trip of an fp16 model), i.e. more untampered "
            f"copies: {fp_noop} of {len(noops)} flagged."
        )
    add(f"* In attacked models, blocks flagged that held no changed value: **{wrong}** of {flagged} flagged blocks.\n")
    add("## 3. Recovery rate against tampering rate\n")
    add(
        "Solid lines: share of seeds recovered bit-exactly; dotted: mean fraction of the changed values "
        "restored. Vertical lines: the bounds of the code each configuration was sealed with, as read from its "
        "header and as `paramseal inspect` prints them: contiguous damage, whose blocks the tags locate (solid), "
        "and scattered single values (dashed). The lane code's contiguous bound is (k − ½)/(b − ½) of the "
        "parameters in tampered blocks (`paramseal.levels.capacity`), its scattered bound the rate at which "
        "random single values tamper that share of the 64-value blocks; irs4's bounds hold per group of 255 "
        "values (`paramseal._strata.capacity` for its k and hosted bytes), and a model decodes only if every "
        f"group does. Codes in this battery: {_codes(configs)}. *Scattered* changes random single values, "
        "*contiguous* changes 2–5 runs of consecutive values, *whole tensors* replaces tensors while they fit "
        "in the fraction.\n"
    )
    for name, r in rel.items():
        if name.startswith("recovery_"):
            add(f"![{name}]({r})\n")
    add(_threshold_table(runs, configs) + "\n")
    add("## 4. Task metric against tampering rate\n")
    for name, r in rel.items():
        if name.startswith("metric_"):
            add(f"![{name}]({r})\n")
    add("## 5. What each attack gives\n")
    add(
        "For every attack, dtype and level: runs detected (*det*), mean block-level localisation recall "
        f"(*loc*; block precision {_precision(flagged, wrong)}, see section 2) and runs recovered bit-exactly (*rec*). "
        "*metric after recover* in the detail tables is the model recover returns (for a bit-exact recovery "
        "that is the sealed model, so its metric is the sealed one by construction); when recovery is not "
        "complete it is a partial result, which the CLI writes only with `--allow-partial`.\n"
    )
    for m in models:
        add(f"### {m}\n")
        add(_matrix(runs, configs, m) + "\n")
        std = next(
            (c for c in configs.values() if c["model"] == m and c["dtype"] == "F32" and c["level"] == "standard"), None
        )
        if std:
            add(
                f"Details for {m} F32 standard (means over seeds; metric: "
                f"{'cosine mean / min' if m == 'minilm' else 'top-1 accuracy'}):\n"
            )
            add(run_table(runs, configs, m, "F32", "standard") + "\n")
    add("## 6. Localisation heatmap\n")
    for name, r in rel.items():
        if name.startswith("heatmap_"):
            add(f"![{name}]({r})\n")
    add("## 7. Against the published claims\n")
    add(_claims(runs, configs) + "\n")
    add("## 8. Where ParamSeal loses\n")
    add(_losses(runs, configs) + "\n")
    page.parent.mkdir(parents=True, exist_ok=True)
    write_text(page, "\n".join(s))
    return page


def _machines(configs: dict[str, Rec]) -> str:
    """Where the runs were timed, from the CPU counts the configuration records noted."""
    cpus = sorted({c["cpus"] for c in configs.values() if isinstance(c.get("cpus"), int)})
    if not cpus or any(not isinstance(c.get("cpus"), int) for c in configs.values()):
        return "on the machine that ran it (its cores not recorded)"
    if len(cpus) == 1:
        return f"on a machine of {cpus[0]} CPU cores"
    return f"on machines of {', '.join(map(str, cpus[:-1]))} and {cpus[-1]} CPU cores"


def _codes(configs: dict[str, Rec]) -> str:
    """Which code sealed which dtype and level, from the configuration records."""
    by: dict[str, list[str]] = defaultdict(list)
    for c in configs.values():
        by[c.get("code", "not recorded")].append(f"{c['dtype']} {c['level']}")
    return "; ".join(f"{code}: {', '.join(dict.fromkeys(v))}" for code, v in by.items()) or "none"


def _code_at(configs: dict[str, Rec], dtype: str, level: str) -> str:
    """The code(s) that sealed ``dtype`` at ``level``, from the configuration records."""
    cs = (c.get("code", "code not recorded") for c in configs.values() if (c["dtype"], c["level"]) == (dtype, level))
    return "/".join(dict.fromkeys(cs)) or "not sealed"


def _precision(flagged: int, wrong: int) -> str:
    """Block-level precision over every attacked run, as words."""
    if not flagged:
        return "not measured (no block flagged)"
    return "is 1.00 throughout" if not wrong else f"{(flagged - wrong) / flagged:.4f} overall"


def _headline(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    live = [r for r in runs if "skipped" not in r and not r.get("noop")]
    det = sum(bool(r.get("detected")) for r in live)
    clean = len(configs) + sum(1 for r in runs if r.get("noop"))
    fp = sum(c["clean_verify_status"] != "intact" for c in configs.values()) + sum(
        bool(r.get("detected")) for r in runs if r.get("noop")
    )
    flagged = sum(r.get("localisation", {}).get("block", {}).get("flagged", 0) for r in live)
    hit = sum(r.get("localisation", {}).get("block", {}).get("hit", 0) for r in live)
    th = thresholds(runs)

    def span(fam: str, level: str) -> str:
        vals = [b for (m, d, lv, f), (b, _, _) in th.items() if f == fam and lv == level and d == "F32"]
        if not vals:
            return "not measured"
        got = [b for b in vals if b is not None]
        lo = _pct(min(got)) if len(got) == len(vals) else "none"
        hi = _pct(max(got)) if got else "none"
        return lo if lo == hi else f"{lo}–{hi}"

    def code(level: str) -> str:
        return _code_at(configs, "F32", level)

    fid = [
        abs(c["metric_sealed"]["accuracy"] - c["metric_original"]["accuracy"])
        for c in configs.values()
        if "accuracy" in c["metric_sealed"]
    ]
    cos = [c["metric_sealed"]["cos_min"] for c in configs.values() if "cos_min" in c["metric_sealed"]]
    lines = [
        f"* **Detection:** {det}/{len(live)} tampered runs detected; **{fp}/{clean}** untampered copies flagged "
        f"(false positives); {flagged - hit} of {flagged} flagged blocks held no tampered value.",
        "* **Bit-exact recovery, fp32** (largest fraction of parameters recovered in every seed, over the models): "
        f"contiguous runs {span('contiguous', 'standard')} at standard ({code('standard')}), "
        f"{span('contiguous', 'strong')} at strong ({code('strong')}); "
        f"scattered single values {span('scattered', 'standard')} at standard and "
        f"{span('scattered', 'strong')} at strong.",
        f"* **Fidelity:** sealing changed top-1 accuracy by at most {100 * max(fid, default=0):.2f} points "
        "(every classifier, dtype and level)"
        + (f"; MiniLM minimum embedding cosine after sealing ≥ {min(cos):.5f}." if cos else "."),
    ]
    return "\n".join(lines)


def _best(runs: Sequence[Rec], fam: str, level: str, dtype: str = "F32") -> str:
    th = thresholds(runs)
    parts = []
    for (m, d, lv, f), (best, fail, seeds) in th.items():
        if f == fam and lv == level and d == dtype:
            parts.append(f"{m} {_rate(best, fail, seeds=seeds)}")
    return "; ".join(parts) or "not measured"


def _bfa_text(runs: Sequence[Rec]) -> str:
    bfa = [r for r in runs if r["kind"] == "bfa" and "skipped" not in r and "accuracy" in r.get("metric_attacked", {})]
    if not bfa:
        return "bfa not in this battery."
    det = sum(bool(r.get("detected")) for r in bfa)
    rec = sum(bool(r.get("recovered")) for r in bfa)
    per = []
    for m in dict.fromkeys(r["model"] for r in bfa):
        mine = [r for r in bfa if r["model"] == m]
        att = _mean(r["metric_attacked"]["accuracy"] for r in mine) or 0.0
        back = _mean(r["metric_recovered"]["accuracy"] for r in mine if r.get("metric_recovered")) or 0.0
        per.append(f"{m} {100 * att:.1f}% → {100 * back:.1f}%")
    return (
        f"bfa ({bfa[0]['options'].get('n')} flips by gradient, every dtype and level): {det}/{len(bfa)} runs "
        f"detected, **{rec}/{len(bfa)} recovered bit-exactly**; mean accuracy attacked → after recover: "
        + "; ".join(per)
        + "."
    )


#: Gao, Yin et al. 2023 (arXiv 2308.11235): recovery when fewer than this share of parameters is randomly modified.
GAO_SCATTERED = 0.20
#: Guan et al.: fidelity within this change of top-1 accuracy.
GUAN_FIDELITY = 0.005


def verdict(measured: float | None, published: float, *, fail: float | None, rtol: float = 0.02) -> str:
    """Say "wins", "ties", "loses" or "no verdict": a measured maximum against a published figure.

    Within ``rtol`` is a tie. Below it is a loss only if some rate at or below the published figure
    failed (``fail``, the smallest failing rate above ``measured``); otherwise nothing was measured there.
    """
    if measured is not None and measured >= published * (1 - rtol):
        return "ties" if measured <= published * (1 + rtol) else "wins"
    return "loses" if fail is not None and fail <= published * (1 + rtol) else "no verdict"


def _rate(best: float | None, fail: float | None, *, paren: bool = True, seeds: tuple[int, int] = (0, 0)) -> str:
    """'5% (fails at 20%)': the largest rate recovered in every seed and the smallest that failed."""
    up = _pct(best) if best is not None else "none"
    then = "no higher rate tested" if fail is None else f"fails at {_fails_at(fail, seeds)}"
    return f"{up} ({then})" if paren else f"{up}, {then}"


def _gao(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    """Scattered recovery on F32 per level and model, and a verdict per model at its best level."""
    th = thresholds(runs)
    per_level: list[str] = []
    best_of: dict[str, tuple[str, float | None, float | None, tuple[int, int]]] = {}
    for lv in dict.fromkeys(c["level"] for c in configs.values() if c["dtype"] == "F32"):
        parts = []
        for m in dict.fromkeys(c["model"] for c in configs.values()):
            if (m, "F32", lv, "scattered") not in th:
                continue
            best, fail, seeds = th[(m, "F32", lv, "scattered")]
            parts.append(f"{m} {_rate(best, fail, seeds=seeds)}")
            if m not in best_of or (best or 0.0) >= (best_of[m][1] or 0.0):
                best_of[m] = (lv, best, fail, seeds)
        if parts:
            per_level.append(f"{lv} ({_code_at(configs, 'F32', lv)}): " + "; ".join(parts))
    if not best_of:
        return "scattered random modification not in this battery: no verdict."
    by: dict[str, list[str]] = defaultdict(list)
    for m, (lv, best, fail, seeds) in best_of.items():
        by[verdict(best, GAO_SCATTERED, fail=fail)].append(f"{m} ({lv}: {_rate(best, fail, paren=False, seeds=seeds)})")
    said = "; ".join(f"**{v}** on {', '.join(by[v])}" for v in ("wins", "ties", "loses") if by[v])
    if by["no verdict"]:
        said += ("; " if said else "") + (
            f"has **no verdict** on {', '.join(by['no verdict'])}: nothing failed at or below their "
            f"{_pct(GAO_SCATTERED)}"
        )
    return (
        "F32 scattered random modification recovered bit-exactly in every seed up to: "
        + "; ".join(per_level)
        + f". Against their {_pct(GAO_SCATTERED)}, each model at its best level: ParamSeal {said}."
    )


def _claims(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    zero = [r for r in runs if r["kind"] == "zero-tensor" and "skipped" not in r and not r.get("noop")]
    zrec = sum(bool(r.get("recovered")) for r in zero)
    cap = {(c["model"], c["dtype"], c["level"]): c.get("contiguous_bound") for c in configs.values()}
    known = [r for r in zero if cap.get((r["model"], r["dtype"], r["level"])) is not None]
    fits = [
        r
        for r in known
        if r.get("changed_blocks", 0) / max(1, r.get("total_blocks", 1)) <= cap[(r["model"], r["dtype"], r["level"])]
    ]
    beyond = [r for r in known if r not in fits]
    frec = sum(bool(r.get("recovered")) for r in fits)
    zmet = [r for r in zero if r.get("recovered")]
    restored_metric = sum(
        r["metric_recovered"] == configs[f"config:{r['model']}/{r['dtype']}/{r['level']}"]["metric_sealed"]
        for r in zmet
    )
    fid = []
    for c in configs.values():
        if c["model"] != "minilm":
            fid.append(abs(c["metric_sealed"]["accuracy"] - c["metric_original"]["accuracy"]))
    cos = [c["metric_sealed"]["cos_min"] for c in configs.values() if c["model"] == "minilm"]
    fmax = max(fid, default=None)
    guan = (
        "no classifier in this battery: no verdict"
        if fmax is None
        else f"sealing changed accuracy by at most {100 * fmax:.2f} points over every classifier, dtype and level "
        f"here: {'within' if fmax <= GUAN_FIDELITY else '**outside**'} their ±{100 * GUAN_FIDELITY:.1f}%"
    )
    rows = [
        "| claim | what they report | ParamSeal, measured here |",
        "|---|---|---|",
        f"| Gao, Yin et al. 2023 (arXiv 2308.11235) | recovers when fewer than **{_pct(GAO_SCATTERED)}** of "
        f"parameters are randomly modified | {_gao(runs, configs)} Contiguous runs (F32): "
        f"standard {_best(runs, 'contiguous', 'standard')}; "
        f"strong {_best(runs, 'contiguous', 'strong')} |",
        "| RADAR | detects progressive bit-flip attacks by group checksums and *zeroes* the flagged weight "
        "groups: accuracy comes back only approximately | "
        + _bfa_text(runs)
        + f" Zeroing whole tensors (zero-tensor), as an attack: {zrec}/{len(zero)} runs recovered **bit-exactly**; "
        + (
            f"of the runs whose zeroed blocks fit in the contiguous bound of the code they were sealed with, "
            f"{frec}/{len(fits)}; beyond it, {sum(bool(r.get('detected')) for r in beyond)}/{len(beyond)} detected "
            f"and {sum(bool(r.get('recovered')) for r in beyond)}/{len(beyond)} recovered; "
            if known
            else ""
        )
        + f"task metric back to the sealed value in {restored_metric}/{len(zmet)} recovered runs |",
        "| Guan et al. | fidelity within ±0.5% accuracy | "
        + guan
        + (f"; MiniLM min cosine after sealing ≥ {min(cos):.5f}" if cos else "")
        + " |",
    ]
    return "\n".join(rows)


def _blocks_hit(rs: Sequence[Rec]) -> float | None:
    """Mean share of blocks holding a changed value."""
    return _mean(r["changed_blocks"] / r["total_blocks"] for r in rs if r.get("total_blocks") and "changed_blocks" in r)


def _scattered_losses(runs: Sequence[Rec], configs: dict[str, Rec]) -> str | None:
    """F32 configurations whose scattered recovery stays below Gao et al.'s figure, with the code's bounds."""
    th = thresholds(runs)
    parts = []
    for c in configs.values():
        key = (c["model"], c["dtype"], c["level"], "scattered")
        if c["dtype"] != "F32" or key not in th:
            continue
        best, fail, seeds = th[key]
        if verdict(best, GAO_SCATTERED, fail=fail) != "loses":
            continue
        txt = f"{c['model']} {c['level']} ({c.get('code', 'code not recorded')}) {_rate(best, fail, seeds=seeds)}"
        if fail is not None and "code" in c:
            at = [
                r
                for r in runs
                if (r["model"], r["dtype"], r["level"]) == key[:3]
                and plots.family(r) == "scattered"
                and abs(r.get("tampering_rate", -1) - fail) <= 0.1 * fail
            ]
            side = "above" if fail > c["scattered_bound"] else "below"
            txt += (
                f": at {_pct(fail)}, {_pct(_blocks_hit(at))} of blocks were tampered, and {_pct(fail)} is {side} "
                f"the code's scattered bound {_pct(c['scattered_bound'])} (contiguous {_pct(c['contiguous_bound'])})"
            )
        parts.append(txt)
    if not parts:
        return None
    return (
        f"* **Scattered modification** (random single values anywhere) recovered below Gao et al.'s "
        f"{_pct(GAO_SCATTERED)} in every seed on F32: " + "; ".join(parts) + "."
    )


def _losses(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    lines = []
    if sc := _scattered_losses(runs, configs):
        lines.append(sc)
    f32 = [c["contiguous_bound"] for c in configs.values() if c["dtype"] == "F32" and "contiguous_bound" in c]
    for dt in ("F16", "BF16"):
        cs = [c for c in configs.values() if c["dtype"] == dt and "contiguous_bound" in c]
        if cs and f32 and max(c["contiguous_bound"] for c in cs) < max(f32):
            codes = "/".join(dict.fromkeys(c["code"] for c in cs))
            lines.append(
                f"* **{dt}** carries k ≤ {max(c['k'] for c in cs)} bits per value ({codes}), so its contiguous "
                f"bound is at most {_pct(max(c['contiguous_bound'] for c in cs))} of parameters (F32: at most "
                f"{_pct(max(f32))}): contiguous runs recovered up to {_best(runs, 'contiguous', 'standard', dt)} "
                "at standard."
            )
    flips = [r for r in runs if r["label"] == "bitflip n=100" and r["dtype"] == "F32" and r["level"] == "standard"]
    lost = []
    for m in dict.fromkeys(r["model"] for r in flips):
        mine = [r for r in flips if r["model"] == m]
        rec = sum(bool(r.get("recovered")) for r in mine)
        if rec < len(mine):
            c = configs.get(f"config:{m}/F32/standard", {})
            lost.append(
                f"{m} {rec}/{len(mine)} ({_pct(_blocks_hit(mine))} of its {c.get('total_blocks', 0):,} blocks "
                f"tampered; contiguous bound {_pct(c.get('contiguous_bound'))})"
            )
    if lost:
        lines.append("* **100 random bit flips** at F32 standard, runs recovered: " + "; ".join(lost) + ".")
    whole = [
        r
        for r in runs
        if r["kind"] in ("noise", "quantize", "finetune", "prune")
        and "skipped" not in r
        and r.get("tampering_rate", 0) > 0.3
    ]
    if whole and not all(r.get("recovered") for r in whole):
        rec = sum(bool(r.get("recovered")) for r in whole)
        det = sum(bool(r.get("detected")) for r in whole)
        bound = {k: c.get("contiguous_bound") for k, c in configs.items()}
        known = [r for r in whole if bound.get(f"config:{r['model']}/{r['dtype']}/{r['level']}") is not None]
        over = sum(
            r.get("changed_blocks", 0) / max(1, r.get("total_blocks", 1))
            > bound[f"config:{r['model']}/{r['dtype']}/{r['level']}"]
            for r in known
        )
        lines.append(
            f"* **Whole-model changes** ({', '.join(_KINDS[k] for k in dict.fromkeys(r['kind'] for r in whole))} "
            "over most values): "
            f"{rec}/{len(whole)} runs recovered, {det}/{len(whole)} detected; mean {_pct(_blocks_hit(whole))} of "
            "blocks tampered"
            + (f", beyond the contiguous bound of their code in {over}/{len(known)} runs." if known else ".")
        )
    meta = [r for r in runs if r["kind"] == "metadata" and r["options"].get("mode") in ("edit", "strip")]
    if meta:
        lines.append(_header_text(meta))
    cut = [r for r in runs if r["kind"] == "truncate" and "skipped" not in r]
    if cut:
        refused = sum(str(r.get("detection", "")).startswith("refused") for r in cut)
        rec = sum(bool(r.get("recovered")) for r in cut)
        lines.append(
            f"* **Truncated files**: {refused}/{len(cut)} refused with a clean error; {rec}/{len(cut)} recovered."
        )
    return "\n".join(lines) or "* No loss measured in this battery."


#: How section 8 names the attacks that can change most values of a model.
_KINDS = {"noise": "noise", "quantize": "quantisation round trips", "prune": "pruning", "finetune": "fine-tuning"}


def _header_text(meta: Sequence[Rec]) -> str:
    """Edited and stripped headers: how verify answered, per mode, and what recover gave."""
    parts = []
    for mode in ("edit", "strip"):
        mine = [r for r in meta if r["options"].get("mode") == mode]
        if not mine:
            continue
        how: dict[str, int] = defaultdict(int)
        for r in mine:
            how[str(r.get("detection", "not recorded"))] += 1
        det = sum(bool(r.get("detected")) for r in mine)
        rec = sum(bool(r.get("recovered")) for r in mine)
        said = ", ".join(f"{n} {d}" for d, n in sorted(how.items(), key=lambda x: -x[1]))
        parts.append(f"{mode}: {det}/{len(mine)} detected, {rec}/{len(mine)} recovered bit-exactly (verify: {said})")
    moved = sum(bool(r.get("changed_parameters")) for r in meta)
    return (
        "* **Edited or stripped ParamSeal header**: "
        + "; ".join(parts)
        + f". Weights changed in {moved}/{len(meta)} of these runs."
    )
