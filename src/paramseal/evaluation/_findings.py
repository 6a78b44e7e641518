"""The findings on the results page: the headline, the comparison with published claims, and where ParamSeal loses.

Kept apart from :mod:`~paramseal.evaluation.report`, which lays the page out: these sections read the
records and say, in words, what they show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from . import plots
from ._tables import Rec, _fails_at, _mean, _pct, thresholds


def _code_at(configs: dict[str, Rec], dtype: str, level: str) -> str:
    """The code(s) that sealed ``dtype`` at ``level``, from the configuration records."""
    cs = (c.get("code", "code not recorded") for c in configs.values() if (c["dtype"], c["level"]) == (dtype, level))
    return "/".join(dict.fromkeys(cs)) or "not sealed"


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
    # the search stops once the loss overflows (one exponent flip often does it), or when none of the flips it
    # tries raises the loss (attacks/_grad.py): say what it made, not what it asked
    made = sorted({int(r["changed_parameters"]) for r in bfa})
    values = f"{made[0]}" + (f"–{made[-1]}" if made[-1] != made[0] else "")
    return (
        f"bfa (a search by gradient for up to {bfa[0]['options'].get('n')} flips, which stops once the task loss "
        f"overflows or none of the flips it tries raises the loss: {values} value(s) changed a run; every dtype "
        f"and level): {det}/{len(bfa)} runs "
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
