"""Write a battery's outputs: raw JSON, a Markdown table, PNG plots and the ``docs/results.md`` page."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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


def thresholds(runs: Sequence[Rec]) -> dict[tuple[str, str, str, str], tuple[float | None, float | None]]:
    """Per (model, dtype, level, family): the largest rate recovered in every seed, and the smallest that failed."""
    g: dict[tuple[str, str, str, str], dict[float, list[Rec]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        fam = plots.family(r)
        if fam and "tampering_rate" in r:
            g[(r["model"], r["dtype"], r["level"], fam)][r["options"]["fraction"]].append(r)
    out = {}
    for k, by_p in g.items():
        ok = [_mean(x["tampering_rate"] for x in rs) for p, rs in by_p.items() if all(x.get("recovered") for x in rs)]
        bad = [
            _mean(x["tampering_rate"] for x in rs) for p, rs in by_p.items() if not all(x.get("recovered") for x in rs)
        ]
        best = max((x for x in ok if x is not None), default=None)
        first_fail = min((x for x in bad if x is not None and (best is None or x > best)), default=None)
        out[k] = (best, first_fail)
    return out


def _threshold_table(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    th = thresholds(runs)
    lines = [
        "| model | dtype | level | bound (positions known) | scattered: all seeds recovered up to | fails at "
        "| contiguous runs: up to | fails at | whole tensors: up to | fails at |",
        "|" + "---|" * 10,
    ]
    for c in configs.values():
        key = (c["model"], c["dtype"], c["level"])
        cells = []
        for fam in ("scattered", "contiguous", "whole"):
            best, fail = th.get((*key, fam), (None, None))
            cells += [_pct(best) if best is not None else "none tested", _pct(fail)]
        if all(x in ("none tested", "–") for x in cells):
            continue
        lines.append(f"| {' | '.join(key)} | {_pct(c['erasure_bound'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file renamed over ``path``: a failed write leaves the old file whole."""
    from ..files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_outputs(records: Sequence[Rec], out: Path, *, command: str, wall_s: float, battery: str) -> list[Path]:
    """Write ``results.json``, ``results.md`` and PNG plots into ``out``; returns the files written."""
    configs = _configs(records)
    runs = [r for r in records if r.get("type") == "run"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    raw = out / "results.json"
    _write(raw, json.dumps({"battery": battery, "command": command, "records": list(records)}))
    table = out / "results.md"
    _write(table, full_table(runs, configs))
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
        f"{wall_s / 60:.0f} min of compute on this project's 2-core machine (summed over resumed sessions). "
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
        "(interrupt it at any time; rerunning it resumes).\n"
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
        "restored. Vertical lines: the information bound for known positions, (k − ½)/(b − ½) of the "
        "parameters in tampered blocks (solid), and half of it for unknown positions (dashed); "
        "`paramseal.levels.capacity`. *Scattered* changes random single values, *contiguous* changes "
        "2–5 runs of consecutive values, *whole tensors* replaces tensors while they fit in the fraction.\n"
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
    _write(page, "\n".join(s))
    return page


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
        vals = [b for (m, d, lv, f), (b, _) in th.items() if f == fam and lv == level and d == "F32" and b is not None]
        if not vals:
            return "not measured"
        lo, hi = _pct(min(vals)), _pct(max(vals))
        return lo if lo == hi else f"{lo}–{hi}"

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
        f"contiguous runs {span('contiguous', 'standard')} at standard, {span('contiguous', 'strong')} at strong; "
        f"scattered single values only {span('scattered', 'standard')} at standard and "
        f"{span('scattered', 'strong')} at strong.",
        f"* **Fidelity:** sealing changed top-1 accuracy by at most {100 * max(fid, default=0):.2f} points "
        "(every classifier, dtype and level)"
        + (f"; MiniLM minimum embedding cosine after sealing ≥ {min(cos):.5f}." if cos else "."),
    ]
    return "\n".join(lines)


def _best(runs: Sequence[Rec], fam: str, level: str, dtype: str = "F32") -> str:
    th = thresholds(runs)
    parts = []
    for (m, d, lv, f), (best, fail) in th.items():
        if f == fam and lv == level and d == dtype:
            parts.append(f"{m} {_pct(best) if best is not None else 'none'} (fails at {_pct(fail)})")
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


def _claims(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    zero = [r for r in runs if r["kind"] == "zero-tensor" and "skipped" not in r and not r.get("noop")]
    zrec = sum(bool(r.get("recovered")) for r in zero)
    cap = {(c["model"], c["dtype"], c["level"]): c["erasure_bound"] for c in configs.values()}
    fits = [
        r
        for r in zero
        if r.get("changed_blocks", 0) / max(1, r.get("total_blocks", 1)) <= cap[(r["model"], r["dtype"], r["level"])]
    ]
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
    rows = [
        "| claim | what they report | ParamSeal, measured here |",
        "|---|---|---|",
        "| Gao, Yin et al. 2023 (arXiv 2308.11235) | recovers when fewer than **20%** of parameters are randomly "
        f"modified | scattered random modification recovered bit-exactly in every seed up to: standard: "
        f"{_best(runs, 'scattered', 'standard')}; strong: {_best(runs, 'scattered', 'strong')}. "
        "**ParamSeal loses** on scattered modification. Contiguous runs: "
        f"standard {_best(runs, 'contiguous', 'standard')}; "
        f"strong {_best(runs, 'contiguous', 'strong')} |",
        "| RADAR | detects progressive bit-flip attacks by group checksums and *zeroes* the flagged weight "
        "groups: accuracy comes back only approximately | "
        + _bfa_text(runs)
        + " Zeroing is itself an attack ParamSeal undoes: zero-tensor (whole tensors zeroed): "
        f"{zrec}/{len(zero)} runs recovered **bit-exactly**; of the runs whose zeroed blocks fit in the level's "
        f"bound, {frec}/{len(fits)}; task metric back to the sealed value in {restored_metric}/{len(zmet)} "
        "recovered runs. Beyond capacity: detected and located, not restored |",
        "| Guan et al. | fidelity within ±0.5% accuracy | sealing changed accuracy by at most "
        f"{100 * max(fid, default=0):.2f} points over every classifier, dtype and level here"
        + (f"; MiniLM min cosine after sealing ≥ {min(cos):.5f}" if cos else "")
        + " |",
    ]
    return "\n".join(rows)


def _losses(runs: Sequence[Rec], configs: dict[str, Rec]) -> str:
    lines = []
    lines.append(
        "* **Scattered modification** (random single values anywhere) is detected and located but recovered "
        f"only at small rates: F32 standard {_best(runs, 'scattered', 'standard')}. Each changed value "
        "spoils its whole 64-value block, so 1% of values scattered spoils about 47% of blocks, beyond every "
        "level's capacity. Gao et al. claim recovery below 20%."
    )
    for dt in ("F16", "BF16"):
        cs = [c for c in configs.values() if c["dtype"] == dt]
        if cs:
            b = max(c["erasure_bound"] for c in cs)
            lines.append(
                f"* **{dt}** carries few watermark bits (bound at most {_pct(b)} of parameters in tampered blocks), "
                f"so capacity is small: contiguous runs recovered up to {_best(runs, 'contiguous', 'standard', dt)} "
                f"at standard."
            )
    flips = [r for r in runs if r["label"] == "bitflip n=100" and r["dtype"] == "F32" and r["level"] == "standard"]
    if flips:
        per = "; ".join(
            f"{m} {sum(bool(r.get('recovered')) for r in flips if r['model'] == m)}/"
            f"{sum(r['model'] == m for r in flips)}"
            for m in dict.fromkeys(r["model"] for r in flips)
        )
        lines.append(
            "* **Small models have small absolute capacity:** 100 random bit flips at F32 standard were recovered "
            f"in {per} runs. Each flip spoils a 64-value block: a model of a few hundred blocks cannot absorb a "
            "hundred of them (blocks per model: "
            + ", ".join(
                f"{m} {c['total_blocks']:,}"
                for m, c in {c["model"]: c for c in configs.values() if c["dtype"] == "F32"}.items()
            )
            + ")."
        )
    whole = [
        r
        for r in runs
        if r["kind"] in ("noise", "quantize", "finetune", "prune")
        and "skipped" not in r
        and r.get("tampering_rate", 0) > 0.3
    ]
    if whole:
        rec = sum(bool(r.get("recovered")) for r in whole)
        lines.append(
            f"* **Whole-model changes** (noise, quantisation round trips, pruning, fine-tuning over most values): "
            f"{rec}/{len(whole)} runs recovered: detected and located, beyond recovery by design."
        )
    meta = [r for r in runs if r["kind"] == "metadata" and r["options"].get("mode") in ("edit", "strip")]
    if meta:
        det, rec = sum(bool(r.get("detected")) for r in meta), sum(bool(r.get("recovered")) for r in meta)
        lines.append(
            f"* **Edited or stripped ParamSeal header**: {det}/{len(meta)} runs detected, {rec}/{len(meta)} "
            "recovered bit-exactly (a model too small to carry its header in its weights is refused once its "
            "metadata header is gone; a larger one verifies and recovers from the copies in its weights); the "
            "weights themselves are unchanged."
        )
    cut = [r for r in runs if r["kind"] == "truncate" and "skipped" not in r]
    if cut:
        refused = sum(str(r.get("detection", "")).startswith("refused") for r in cut)
        rec = sum(bool(r.get("recovered")) for r in cut)
        lines.append(
            f"* **Truncated files**: {refused}/{len(cut)} refused with a clean error; {rec}/{len(cut)} recovered."
        )
    return "\n".join(lines)
