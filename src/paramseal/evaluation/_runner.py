"""Running a battery: seal each configuration, attack, verify, recover, and append every record to ``results.jsonl``.

Kept apart from :mod:`~paramseal.evaluation.battery`, which only says what a battery is. Finished runs are
appended to ``results.jsonl`` one line each, so an interrupted battery resumes at the configuration it
stopped in and a rerun of the same command skips what is done. Each session seals with a fresh key, so every
record carries the identity of the seal it measured (:func:`header_digest`, never the key; not
the seal id that ``seal`` prints, the salt alone): on resume a configuration whose saved records
come from another seal is redone whole, and figures from two seals are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from .. import _strata
from .._findings import HEADER_FROM_WEIGHTS
from .._inspect import caps, free_strata
from ..attacks import AttackSpec, attack, attack_file
from ..errors import ParamSealError, UsageError
from ..formats import Loaded
from ..header import METADATA_KEY, peek_header
from ..keys import Key
from ..levels import bits_for, capacity
from ..recover import recover_from
from ..report import Report
from ..seal import SealConfig
from ..verify import check, report_of
from . import metrics
from .battery import DTYPES, Attack, Battery, label, run_id
from .models import TaskModel, get_model


def seal_code(header_json: str, dtype: str, k: int) -> dict[str, Any]:
    """The code a model was sealed with, read from its header, and that code's bounds for ``dtype`` at ``k``.

    The bounds are the ones ``paramseal inspect`` prints for the sealed file (fractions of parameters):
    ``contiguous_bound`` for damage whose blocks the tags locate, ``scattered_bound`` for single values
    changed at random. irs4's scattered figure is its per-group radius (a large model decodes only if every
    group does, so it reaches a little less); the lane code's is the rate at which random single values hit
    ``contiguous_bound`` of the 64-value blocks (each changed value spoils its block).
    """
    h = peek_header(header_json)
    host = h.get("outer_host")
    irs = h.get("code") == _strata.CODE_NAME and isinstance(host, int)
    c = caps({dtype: k}, host if irs else None, free_strata(h.get("tensors"), host if irs else None))[dtype]
    if c.get("code") == "irs":
        return {
            "code": "irs4",
            "outer_host": host,
            "contiguous_bound": c["contiguous_bound"],
            "scattered_bound": c["scattered_radius_per_group"],
        }
    if "contiguous_bound" not in c:  # no bits carried (k = 0)
        return {"code": "lanes", "contiguous_bound": 0.0, "scattered_bound": 0.0}
    return {"code": "lanes", "contiguous_bound": c["contiguous_bound"], "scattered_bound": c["scattered_bound"]}


def header_digest(header_json: str) -> str:
    """The identity of one seal: a digest of its header (salt, key fingerprint, MACs; never the key)."""
    return hashlib.sha256(header_json.encode()).hexdigest()[:16]


_NUMBER = (int, float)
#: The fields the report reads from every saved record, and their types.
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "config": {
        "model": str,
        "dtype": str,
        "level": str,
        "k": int,
        "metric_original": dict,
        "metric_sealed": dict,
        "bound_relative_change": _NUMBER,
        "measured_relative_change": _NUMBER,
        "clean_verify_status": str,
        "clean_verify_flagged_blocks": int,
        "total_blocks": int,
    },
    "run": {"model": str, "dtype": str, "level": str, "seed": int, "kind": str, "options": dict, "label": str},
}


@dataclass
class _Config:
    """One sealed model (model, dtype, level) and its reference metrics."""

    original: dict[str, NDArray[Any]]
    sealed: Loaded
    header: str
    record: dict[str, Any]

    @property
    def seal(self) -> str:
        """The seal identity its records carry."""
        return header_digest(self.header)


@dataclass
class Runner:
    """Runs a battery into ``out/results.jsonl``, skipping runs already there."""

    out: Path
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    progress: bool | None = None
    key: Key = field(default_factory=Key.generate)
    _models: dict[str, TaskModel] = field(default_factory=dict)
    _weights: dict[str, dict[str, NDArray[Any]]] = field(default_factory=dict)
    _configs: dict[tuple[str, str, str], _Config] = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        """The results file (JSON lines keyed by ``id``)."""
        return self.out / "results.jsonl"

    def done(self) -> dict[str, dict[str, Any]]:
        """Records already in the results file, by id (a torn line, a record cut short, is ignored)."""
        recs: dict[str, dict[str, Any]] = {}
        if self.results_path.is_file():
            p = self.results_path
            foreign = f"'{p}' is not a results file of paramseal eval; give --out a folder of its own"
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # eval writes ASCII JSON only
                raise UsageError(f"{foreign} (it is not UTF-8 text)") from None
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    r = json.loads(line)
                except ValueError:
                    # a record cut short when eval was killed: the last line, or one a resume since ended
                    if line.startswith("{"):
                        continue
                    raise UsageError(f"{foreign} (line {n} is not JSON)") from None
                if not (isinstance(r, dict) and isinstance(r.get("id"), str) and r.get("type") in ("config", "run")):
                    raise UsageError(f"{foreign} (line {n} is no run or configuration record)")
                recs[r["id"]] = r
            if text and not text.endswith("\n"):  # killed mid-write: end the torn line before appending
                with open(p, "a") as f:
                    f.write("\n")
        return recs

    def _save(self, rec: dict[str, Any]) -> None:
        with open(self.results_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def _model(self, name: str) -> TaskModel:
        if name not in self._models:
            self._models[name] = get_model(name)
        return self._models[name]

    def _config(self, model: str, dtype: str, level: str, done: dict[str, dict[str, Any]]) -> _Config:
        ck = (model, dtype, level)
        if ck in self._configs:
            return self._configs[ck]
        task = self._model(model)
        if model not in self._weights:
            self._weights[model] = task.weights()
        w = self._weights[model]
        original = {n: a.astype(DTYPES[dtype]) if a.dtype.kind == "f" else a for n, a in w.items()}
        t0 = time.monotonic()
        sealed = SealConfig(level=level).seal(original, self.key)
        seal_s = time.monotonic() - t0
        loaded = Loaded(dict(sealed.tensors), {METADATA_KEY: sealed.header_json})
        cid, seal = f"config:{model}/{dtype}/{level}", header_digest(sealed.header_json)
        rec = done.get(cid)
        if rec is None or rec.get("seal") != seal:  # a record of another seal describes another sealed model
            clean = report_of(check(sealed.tensors, self.key, sealed.header_json, metadata={}))
            k = bits_for(dtype, level, None)
            rec = {
                "id": cid,
                "type": "config",
                "seal": seal,
                "model": model,
                "dtype": dtype,
                "level": level,
                "k": k,
                "parameters": sum(int(a.size) for a in original.values()),
                "tensors": len(original),
                "bound_relative_change": capacity(dtype, k).max_relative_change,
                **seal_code(sealed.header_json, dtype, k),
                "measured_relative_change": metrics.max_relative_change(original, sealed.tensors),
                "metric_fp32": task.evaluate(w),
                "metric_original": task.evaluate(original),
                "metric_sealed": task.evaluate(sealed.tensors),
                "clean_verify_flagged_blocks": clean.tampered_block_count,
                "clean_verify_status": clean.status,
                "total_blocks": clean.total_blocks,
                "seal_s": seal_s,
                "cpus": os.cpu_count(),  # where its times were measured (the results page says so)
                "numel": {n: int(a.size) for n, a in original.items()},
            }
            self._save(rec)
        cfg = _Config(original, loaded, sealed.header_json, rec)
        self._configs = {ck: cfg}  # keep one sealed config in memory (MiniLM is 90 MB per copy)
        return cfg

    def run(self, battery: Battery, *, on_run: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run every unfinished run of ``battery``; returns all its records (old and new)."""
        self.out.mkdir(parents=True, exist_ok=True)
        done = self.done()
        total, i, t0 = battery.size(), 0, time.monotonic()
        show = self.stream.isatty() if self.progress is None else self.progress
        groups: dict[tuple[str, str, str], list[tuple[str, int, Attack]]] = {}
        for plan, dt, lv, seed, a in battery.runs():
            groups.setdefault((plan.model, dt, lv), []).append((run_id(plan.model, dt, lv, seed, a), seed, a))
        for (model, dt, lv), runs in groups.items():
            cid = f"config:{model}/{dt}/{lv}"
            saved = [done[r] for r in (cid, *(rid for rid, _, _ in runs)) if r in done]
            seals = {r.get("seal") for r in saved}
            if len(saved) == len(runs) + 1 and len(seals) == 1 and None not in seals:
                for r in saved:  # kept as they are for the report: refused now, not after the rest has run
                    self._check_kept(r)
                i += len(runs)  # complete, and all from one seal: nothing to seal or redo
                continue
            cfg = self._config(model, dt, lv, done)
            if stale := [r for r in saved if r.get("seal") != cfg.seal]:
                self._say(
                    f"{cid[7:]}: {len(stale)} saved record(s) come from another seal (an earlier session's key) "
                    "or name none; redoing its configuration record and runs on this session's seal",
                    show,
                )
            done[cid] = cfg.record
            for rid, seed, a in runs:
                i += 1
                if rid in done and done[rid].get("seal") == cfg.seal:
                    continue
                rec = self._one(model, dt, lv, seed, a, cfg)
                rec["id"] = rid
                self._save(rec)
                done[rid] = rec
                if on_run:
                    on_run(rec)
                if show:
                    el = time.monotonic() - t0
                    self.stream.write(f"\reval [{i}/{total}] {el:6.0f}s  {rid[:70]:<70}")
                    self.stream.flush()
        if show:
            self.stream.write(f"\reval done: {total} runs in {time.monotonic() - t0:.0f}s{' ' * 80}\n")
        wanted = {run_id(p.model, d, lv, s, a) for p, d, lv, s, a in battery.runs()}
        wanted |= {f"config:{p.model}/{d}/{lv}" for p, d, lv, _, _ in battery.runs()}
        return [r for r in done.values() if r["id"] in wanted]

    def _check_kept(self, rec: dict[str, Any]) -> None:
        """Refuse a saved record the report cannot use (edited or damaged), naming it and its field."""
        for name, want in _FIELDS[rec["type"]].items():
            v = rec.get(name)
            if v is None or not isinstance(v, want) or isinstance(v, bool):
                what = "lacks" if name not in rec else "has an unusable"
                raise UsageError(
                    f"'{self.results_path}': the record '{rec['id']}' {what} field {name!r} (it was edited or "
                    "damaged); delete that line to have its configuration run again, or give --out a new folder"
                )

    def _say(self, msg: str, show: bool) -> None:
        self.stream.write(("\n" if show else "") + f"eval: {msg}\n")  # below the progress line, not over it
        self.stream.flush()

    def _one(self, model: str, dtype: str, level: str, seed: int, a: Attack, cfg: _Config) -> dict[str, Any]:
        kind, opts = a
        rec: dict[str, Any] = {
            "type": "run",
            "seal": cfg.seal,
            "model": model,
            "dtype": dtype,
            "level": level,
            "seed": seed,
            "kind": kind,
            "options": opts,
            "label": label(a),
        }
        t0 = time.monotonic()
        task = self._model(model)
        try:
            spec = AttackSpec(kind, seed=seed, **opts)  # type: ignore[arg-type]
            if kind == "truncate":
                rec.update(_truncated(cfg, spec, self.key))
                rec["wall_s"] = time.monotonic() - t0
                return rec
            attacked, truth = attack(cfg.sealed, spec, model=task)
        except UsageError as e:
            rec.update(skipped=str(e), wall_s=time.monotonic() - t0)
            return rec
        rec["truth"] = truth.to_dict(0, per_tensor=False)
        # nothing changed (an fp16 round trip of an fp16 model): an untampered copy; flagging it is a false positive
        rec["noop"] = truth.changed_parameters == 0 and not truth.structural
        rec["tampering_rate"] = truth.tampering_rate
        rec["changed_parameters"] = truth.changed_parameters
        rec["changed_blocks"] = sum(int(c.blocks.size) for c in truth.changes)
        text = attacked.metadata.get(METADATA_KEY)
        rec["metric_attacked"] = task.evaluate(attacked.tensors)
        user = {k: v for k, v in attacked.metadata.items() if k != METADATA_KEY}
        if kind == "metadata" or text is None:  # the copies in the weights stand in for an edited or stripped header
            rec.update(_header_attacked(cfg, attacked, self.key))
            rec["wall_s"] = time.monotonic() - t0
            return rec
        try:
            t1 = time.monotonic()
            chk = check(attacked.tensors, self.key, text, metadata=user)
            vrep = report_of(chk)
            rec["verify_s"] = time.monotonic() - t1
            t1 = time.monotonic()
            res = recover_from(chk)
            rec["recover_s"] = time.monotonic() - t1
        except ParamSealError as e:
            rec.update(detected=True, detection=f"error: {type(e).__name__}", recovered=False)
            rec["localisation"] = metrics.localisation(truth, _nothing_located(), None)
            rec["wall_s"] = time.monotonic() - t0
            return rec
        rec["status"] = vrep.status
        rec["detected"] = vrep.status != "intact"
        rec["detection"] = vrep.status
        rec["flagged_blocks"] = vrep.tampered_block_count
        rec["total_blocks"] = vrep.total_blocks
        rec["recover_status"] = res.report.status
        rec["localisation"] = metrics.localisation(truth, vrep, res.report)
        exact, frac = metrics.restored(truth, cfg.sealed.tensors, res.tensors)
        rec["recovered"] = exact and res.report.ok
        rec["fraction_restored"] = frac
        # bit-identical weights give identical outputs: evaluate only models that differ from both references
        if exact:
            rec["metric_recovered"] = cfg.record["metric_sealed"]
        elif _same(res.tensors, attacked.tensors):
            rec["metric_recovered"] = rec["metric_attacked"]
        else:
            rec["metric_recovered"] = task.evaluate(res.tensors)
        if (
            seed == 0
            and level == "standard"
            and dtype == "F32"
            and kind in ("random-modify", "bitflip", "backdoor-row")
        ):
            rec["heat"] = metrics.heat_rows(truth, vrep, cfg.record["numel"])
        rec["wall_s"] = time.monotonic() - t0
        return rec


def _same(a: dict[str, NDArray[Any]], b: dict[str, NDArray[Any]]) -> bool:
    """Whether two models hold the same tensors, bit for bit."""
    from .._bits import uint_view

    return set(a) == set(b) and all(
        a[n].dtype == b[n].dtype and a[n].shape == b[n].shape and np.array_equal(uint_view(a[n]), uint_view(b[n]))
        for n in a
    )


def _truncated(cfg: _Config, spec: AttackSpec, key: Key) -> dict[str, Any]:
    """Write the sealed model, cut the file, and check that verify refuses it cleanly."""
    from ..files import verify_file, write_model

    with tempfile.TemporaryDirectory(prefix="paramseal-eval-") as d:
        src, dst = Path(d) / "sealed.safetensors", Path(d) / "cut.safetensors"
        write_model(src, cfg.sealed)
        truth = attack_file(src, dst, spec)
        try:
            rep = verify_file(dst, key)
            how = f"verify returned {rep.status}"
        except ParamSealError as e:
            how = f"refused: {type(e).__name__}"
    return {
        "truth": truth.to_dict(0),
        "detected": how.startswith("refused") or "intact" not in how,
        "detection": how,
        "recovered": False,
    }


def _header_attacked(cfg: _Config, attacked: Loaded, key: Key) -> dict[str, Any]:
    """Verify and recover a model whose header was edited or stripped, as files (the copies in the weights too)."""
    from ..files import read_model, recover_file, verify_file, write_model

    with tempfile.TemporaryDirectory(prefix="paramseal-eval-") as d:
        src, dst = Path(d) / "attacked.safetensors", Path(d) / "recovered.safetensors"
        write_model(src, attacked)
        try:
            rep = verify_file(src, key)
            res = recover_file(src, dst, key).report
        except ParamSealError as e:
            return {"detected": True, "detection": f"refused: {type(e).__name__}", "recovered": False}
        # recovered: the sealed weights, bit for bit, in a file that verifies (its header in metadata or weights)
        exact = res.ok and _same(read_model(dst).tensors, cfg.sealed.tensors) and verify_file(dst, key).ok
    # a stripped header leaves the weights intact: verify says so, and says the header came from the weights
    noted = rep.status == "intact" and any(HEADER_FROM_WEIGHTS in n for n in rep.notes)
    detection = f"{rep.status}, noted: {HEADER_FROM_WEIGHTS}" if noted else rep.status
    return {
        "status": rep.status,
        "detected": rep.status != "intact" or noted,
        "detection": detection,
        "recovered": exact,
    }


def _nothing_located() -> Report:
    """A report naming nothing (for runs where verify refused the model)."""
    return Report("verify", "tampered", False)
