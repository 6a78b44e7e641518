"""The evaluation battery: attacks x strengths x levels x dtypes x seeds on real models.

Every run has an id built from everything that defines it (:func:`run_id`), the key of its record in
``results.jsonl``; :mod:`~paramseal.evaluation._runner` runs a battery and keeps those records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import UsageError
from ..levels import LEVELS
from .models import MODELS, get_model

DTYPES: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
Attack = tuple[str, dict[str, Any]]  # kind and AttackSpec options, without the seed

_SCATTERED = (0.0005, 0.001, 0.002, 0.004, 0.01, 0.05, 0.2)
_CONTIGUOUS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
_WHOLE = (0.05, 0.1, 0.2, 0.33)
_COMMON: tuple[Attack, ...] = (
    ("bitflip", {"n": 1}),
    ("bitflip", {"n": 10}),
    ("bitflip", {"n": 100}),
    ("bitflip", {"n": 10, "field": "exponent"}),
    ("bitflip", {"n": 10, "field": "sign"}),
    ("bitflip", {"n": 10, "field": "watermark"}),
    ("noise", {"sigma": 0.01}),
    ("prune", {"fraction": 0.1}),
    ("backdoor-row", {"n": 1}),
    ("zero-tensor", {}),
    ("replace-tensor", {}),
    ("lsb-rewrite", {"fraction": 0.001}),
    ("lsb-rewrite", {"fraction": 1.0}),
    ("swap", {"mode": "blocks", "n": 1}),
    ("swap", {"mode": "rows", "n": 1}),
    ("swap", {"mode": "tensors"}),
    ("quantize", {"mode": "int8"}),
    ("quantize", {"mode": "fp16"}),
    ("metadata", {"mode": "edit"}),
    ("metadata", {"mode": "strip"}),
    ("metadata", {"mode": "user"}),
    ("truncate", {"fraction": 0.5}),
)
_SWEEP: tuple[Attack, ...] = (
    *(("random-modify", {"fraction": p}) for p in _SCATTERED),
    *(("random-modify", {"fraction": p, "contiguous": True}) for p in _CONTIGUOUS),
    *(("replace-tensor", {"fraction": p}) for p in _WHOLE),
    *(("zero-tensor", {"fraction": p}) for p in _WHOLE[1:3]),
)
_GRAD: tuple[Attack, ...] = (("bfa", {"n": 5}), ("finetune", {"steps": 10, "lr": 0.01}))


@dataclass(frozen=True, slots=True)
class Plan:
    """Which runs to do on one model."""

    model: str
    dtypes: tuple[str, ...]
    levels: tuple[str, ...]
    seeds: tuple[int, ...]
    attacks: tuple[Attack, ...]


@dataclass(frozen=True, slots=True)
class Battery:
    """A named set of plans."""

    name: str
    plans: tuple[Plan, ...]

    def runs(self) -> Iterator[tuple[Plan, str, str, int, Attack]]:
        """Every run, config by config (model, dtype, level), in a fixed order."""
        for p in self.plans:
            for dt in p.dtypes:
                for lv in p.levels:
                    for seed in p.seeds:
                        for a in p.attacks:
                            yield p, dt, lv, seed, a

    def size(self) -> int:
        """Number of attacked runs."""
        return sum(len(p.dtypes) * len(p.levels) * len(p.seeds) * len(p.attacks) for p in self.plans)


_ALL: tuple[Attack, ...] = _COMMON + _SWEEP + _GRAD


BATTERIES: dict[str, Battery] = {
    # a few seconds: what CI runs
    "tiny": Battery(
        "tiny",
        (
            Plan(
                "mlp",
                ("F32", "BF16"),
                ("standard",),
                (0,),
                (
                    ("bitflip", {"n": 10}),
                    ("random-modify", {"fraction": 0.001}),
                    ("random-modify", {"fraction": 0.05}),
                    ("random-modify", {"fraction": 0.1, "contiguous": True}),
                    ("zero-tensor", {}),
                    ("metadata", {"mode": "strip"}),
                    ("truncate", {}),
                ),
            ),
        ),
    ),
    # the battery behind docs/results.md (about 20 minutes on 2 busy cores)
    "docs": Battery(
        "docs",
        (
            Plan("mlp", ("F32",), LEVELS, (0, 1, 2), _ALL),
            Plan("mlp", ("F16", "BF16"), LEVELS, (0,), _ALL),
            Plan("cnn", ("F32", "F16", "BF16"), LEVELS, (0,), _ALL),
            Plan("minilm", ("F32",), ("standard", "strong"), (0,), _COMMON + _SWEEP[::2] + _GRAD[1:]),
            Plan("minilm", ("F16", "BF16"), ("standard",), (0,), _COMMON[:3] + _SWEEP[::3]),
            # every other level and dtype: sealing fidelity (plus one bit flip each)
            Plan("minilm", ("F32",), ("light",), (0,), _COMMON[:1]),
            Plan("minilm", ("F16", "BF16"), ("light", "strong"), (0,), _COMMON[:1]),
        ),
    ),
}
BATTERIES["full"] = Battery("full", tuple(Plan(m, tuple(DTYPES), LEVELS, (0, 1, 2), _ALL) for m in MODELS))


def custom(models: tuple[str, ...], dtypes: tuple[str, ...], levels: tuple[str, ...], seeds: int) -> Battery:
    """Every attack on the given models, dtypes and levels, with seeds ``0..seeds-1``."""
    for opt, given in (("--model", models), ("--dtype", dtypes), ("--level", levels)):
        # run once but counted (and reported) once per mention: 'OK: 172 runs (43 new)' after a fresh run of 43
        if twice := sorted({v for v in given if given.count(v) > 1}):
            raise UsageError(f"{opt} {', '.join(map(repr, twice))} given more than once; name each once")
    for m in models:
        get_model(m)
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype '{d}'; choose from {', '.join(DTYPES)}")
    for lv in levels:
        if lv not in LEVELS:
            raise UsageError(f"unknown level '{lv}'; choose from {', '.join(LEVELS)}")
    return Battery("custom", tuple(Plan(m, dtypes, levels, tuple(range(seeds)), _ALL) for m in models))


def label(a: Attack) -> str:
    """Short label of an attack and its strength, e.g. ``random-modify p=0.01 contiguous``."""
    kind, o = a
    parts = [kind]
    for k, v in sorted(o.items()):
        if k == "contiguous":
            parts.append("contiguous" if v else "")
        elif k == "fraction":
            parts.append(f"p={v:g}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(p for p in parts if p)


def run_id(model: str, dtype: str, level: str, seed: int, a: Attack) -> str:
    """The key of a run in the results file."""
    return f"{model}/{dtype}/{level}/s{seed}/{label(a).replace(' ', '_')}"
