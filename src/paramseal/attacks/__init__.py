"""Tamper with a model on purpose, for drills and for measuring ParamSeal (``paramseal attack``).

Every attack is deterministic given its seed and returns a :class:`GroundTruth`: exactly
which tensors, flat indices and bits changed, found by comparing the bits before and
after, so that localisation can be scored against it. ::

    >>> import numpy as np
    >>> from paramseal.attacks import AttackSpec, attack
    >>> from paramseal.formats import Loaded
    >>> m = Loaded({"w": np.ones((4, 64), np.float32)})
    >>> out, truth = attack(m, AttackSpec("bitflip", seed=1, n=3, field="exponent"))
    >>> truth.changed_parameters, sum(c.bits_flipped for c in truth.changes)
    (3, 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParamSealError, UsageError
from ..formats import Loaded
from ._grad import GradModel
from ._spec import FIELDS, KINDS, MODES, NEEDS_MODEL, AttackSpec, Field, Kind
from ._swap import swap
from ._truth import GroundTruth, TensorChange, diff, metadata_diff
from ._values import (
    backdoor_row,
    bitflip,
    lsb_rewrite,
    noise,
    prune,
    quantize,
    random_modify,
    whole_tensors,
)
from ._values import metadata as _metadata


def _rng(spec: AttackSpec) -> np.random.Generator:
    # the kind is part of the stream, so two kinds with one seed do not share random draws
    return np.random.default_rng([spec.seed, KINDS.index(spec.kind)])


def attack(loaded: Loaded, spec: AttackSpec, *, model: GradModel | None = None) -> tuple[Loaded, GroundTruth]:
    """Apply one attack to a model in memory; the input is not modified.

    ``model`` is the task model for bfa and finetune (else ``spec.model`` names a built-in
    one). Raises :class:`~paramseal.errors.UsageError` for options that do not fit the model.
    """
    if spec.kind == "truncate":
        raise UsageError("truncate works on files, not tensors: use attack_file or attack_bytes")
    t, meta, rng = dict(loaded.tensors), dict(loaded.metadata), _rng(spec)
    stopped = ""
    match spec.kind:
        case "bitflip":
            t = bitflip(t, spec, meta, rng)
        case "random-modify":
            t = random_modify(t, spec, rng)
        case "noise":
            t = noise(t, spec, rng)
        case "prune":
            t = prune(t, spec)
        case "backdoor-row":
            t = backdoor_row(t, spec, rng)
        case "replace-tensor" | "zero-tensor":
            t = whole_tensors(t, spec, rng, zero=spec.kind == "zero-tensor")
        case "lsb-rewrite":
            t = lsb_rewrite(t, spec, meta, rng)
        case "swap":
            t = swap(t, spec, rng)
        case "quantize":
            t = quantize(t, spec)
        case "metadata":
            meta = _metadata(meta, spec, rng)
        case "bfa" | "finetune":
            from . import _grad

            m = model if model is not None else _builtin_model(spec.model)
            if spec.kind == "bfa":
                t, stopped = _grad.bfa(t, spec, m)
            else:
                t = _grad.finetune(t, spec, m)
    changes, structural = diff(loaded.tensors, t)
    keys = metadata_diff(loaded.metadata, meta)
    truth = GroundTruth(
        spec.kind,
        spec.seed,
        spec.options(),
        sum(int(a.size) for a in loaded.tensors.values()),
        changes,
        structural
        + tuple(
            f"metadata key '{k}' " + ("removed" if k not in meta else "added" if k not in loaded.metadata else "edited")
            for k in keys
        ),
        keys,
        stopped=stopped,
    )
    # what the writer needs besides the values (a .pt's module versions, an ONNX graph) stays the input's
    return Loaded(t, meta, source=loaded.source if list(t) == list(loaded.tensors) else None), truth


def attack_bytes(data: bytes, spec: AttackSpec, total_parameters: int = 0) -> tuple[bytes, GroundTruth]:
    """Apply a file-level attack (truncate: keep ``fraction`` of the bytes, default half)."""
    if spec.kind != "truncate":
        raise UsageError(f"attack_bytes applies truncate only, not {spec.kind}")
    keep = min(int(len(data) * spec.fraction_or_default), len(data) - 1)  # a fraction near 1 still cuts a byte
    truth = GroundTruth(
        spec.kind,
        spec.seed,
        spec.options(),
        total_parameters,
        structural=(f"file truncated from {len(data)} to {keep} bytes",),
        file={"bytes_before": len(data), "bytes_after": keep},
    )
    return data[:keep], truth


def _builtin_model(name: str | None) -> GradModel:
    if name is None:
        raise UsageError("bfa and finetune need a task model: pass --model (one of the built-in eval models)")
    from ..evaluation.models import get_model

    m: Any = get_model(name)
    return m  # type: ignore[no-any-return]


def attack_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], spec: AttackSpec) -> GroundTruth:
    """Read ``src``, attack it and write ``dst`` atomically; ``src`` is never modified."""
    from .._paths import atomic_path, never_read_only, never_read_only_data, require_readable_file
    from ..files import inspect_file, read_model, write_model
    from ..formats.registry import adapter_for
    from ..keys import looks_like_key_file

    s, d = Path(src), Path(dst)
    if s.is_dir():  # it exists: "does not exist or is not a file" would send the user looking for it
        from ..sharded import is_sharded

        if not is_sharded(s):
            raise UsageError(f"input '{s}' is a folder; attack takes one model file")
        shards = sorted(s.glob("*.safetensors"))
        example = f" (such as '{shards[0]}')" if shards else ""
        raise UsageError(
            f"input '{s}' is a sharded checkpoint folder; attack takes one model file: "
            f"attack one of its shards{example}"
        )
    require_readable_file(s)
    if looks_like_key_file(s):  # truncate would copy part of the key into an output others can read
        raise UsageError(f"'{s}' looks like a ParamSeal key file, not a model; attack takes a model file")
    if d.exists() and d.resolve() == s.resolve():
        raise UsageError(f"output '{d}' is the input file; attack writes a new file and never modifies its input")
    never_read_only(d)
    if spec.kind != "truncate" and d.suffix.lower() == ".onnx":  # ONNX is written only to .onnx
        never_read_only_data(d, s)  # the data of an ONNX model at OUT goes with it
    if spec.kind == "truncate":
        try:  # the share of parameters it reports needs their count (a mapped read: no tensor is loaded)
            total = sum(inspect_file(s)["parameters"].values())
        except ParamSealError:  # not a model ParamSeal reads: truncate works on any file
            total = 0
        data = s.read_bytes()
        out, truth = attack_bytes(data, spec, total)
        with atomic_path(d) as tmp:
            tmp.write_bytes(out)
        return truth
    attacked, truth = attack(read_model(s), spec)
    writer = adapter_for(d, must_exist=False)
    lost = [] if writer.keeps_metadata else sorted(set(attacked.metadata) - writer.carried_metadata)
    if lost:
        # the ground truth would not say so: the file written would lose every key, not the attack's alone
        raise UsageError(
            f"output '{d}' cannot hold metadata, so the metadata {', '.join(map(repr, lost))} "
            f"would be lost besides what {spec.kind} changes; write OUT as .safetensors, .npz or .onnx"
        )
    write_model(d, attacked)
    return truth


__all__ = [
    "FIELDS",
    "KINDS",
    "MODES",
    "NEEDS_MODEL",
    "AttackSpec",
    "Field",
    "GradModel",
    "GroundTruth",
    "Kind",
    "TensorChange",
    "attack",
    "attack_bytes",
    "attack_file",
]
