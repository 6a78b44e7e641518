"""Seal, verify and recover a live ``torch.nn.Module`` in memory, on CPU or CUDA.

The module's state (parameters and persistent buffers, as in
``module.state_dict()``) is copied to CPU numpy arrays for the engine and the
results are written back in place with ``Tensor.copy_``, so every parameter
keeps its object identity, dtype and device (bit for bit: a same-dtype copy is
exact). Tied weights (one tensor under two names) are sealed once, under the
first name ``state_dict`` gives; the other names are sealed in the metadata
entry ``paramseal.tied``, as the ``.pt`` reader finds them, so
``torch.save(module.state_dict(), path)`` of a sealed module verifies as a file.

Example::

    import torch, paramseal, paramseal.torch as pst
    net = torch.nn.Linear(512, 512)
    key = paramseal.Key.generate()
    header = pst.seal_module(net, key).header_json        # net's low mantissa bits now carry the seal
    pst.verify_module(net, key, header).status             # 'intact'
    with torch.no_grad():
        net.weight[3, :10] = 0.0                           # tamper
    pst.recover_module(net, key, header).status            # 'recovered': net restored in place

Keep ``header_json`` (it is not secret) beside the model, for example in your
model registry. Without it, ``verify_module`` and ``recover_module`` read the
copy of the header that sealing embeds in the weights of a large enough model
(a tiny model has no room for one and needs ``header_json``). To save the module,
``torch.save(sealed_state_dict(net, header), path)`` keeps the header in the file as
``paramseal seal`` does for a ``.pt``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from . import _json
from ._weights_header import header_from_weights
from .errors import FormatError, UnsupportedError, UsageError
from .formats.pytorch import TIED_KEY, import_torch, keep_metadata, numpy_to_tensor, tensor_to_numpy, untie
from .header import METADATA_KEY, Header, parse_header, peek_header
from .keys import Key, require_key
from .recover import recover
from .report import Report
from .seal import SealConfig, check_metadata, refuse_sealed
from .verify import verify

_torch = import_torch("paramseal.torch")

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True, slots=True)
class ModuleSeal:
    """What ``seal_module`` returns: the header to keep for verify/recover (the weights stay in the module)."""

    header_json: str
    header: Header = field(repr=False)
    names: tuple[str, ...]  # the sealed state entries, in order


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state entries (parameters and persistent buffers) in ``state_dict`` order, tied ones once."""
    return untie(_state(module))[0]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    if not isinstance(module, _torch.nn.Module):
        hint = " (for a state dict use paramseal.seal)" if isinstance(module, Mapping) else ""
        raise UsageError(f"module must be a torch.nn.Module, not {type(module).__name__}{hint}")
    # torch.compile's wrapper holds the same weights under '_orig_mod.' names: seal and check the module's own
    inner = getattr(module, "_orig_mod", None)
    if type(module).__name__ == "OptimizedModule" and isinstance(inner, _torch.nn.Module):
        module = inner
    state = {n: t for n, t in module.state_dict(keep_vars=True).items() if isinstance(t, _torch.Tensor)}
    _refuse_lazy(state, "module tensor(s)")
    return state


def _refuse_lazy(tensors: Mapping[str, object], what: str) -> None:
    """Refuse uninitialized (lazy) parameters and buffers, naming them, with how to give them values."""
    lazy = [n for n, t in tensors.items() if isinstance(t, _torch.nn.parameter.UninitializedTensorMixin)]
    if lazy:  # torch raises a ValueError or RuntimeError on any use of one (its shape, its storage)
        raise UnsupportedError(
            f"{what} {', '.join(map(repr, lazy[:8]))} are uninitialized (a lazy module's) and hold no "
            "values; run the module's forward once with a sample batch (or load its weights) first"
        )


def _made_anew(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """The entries of ``state`` (``_state(module)``) that ``state_dict()`` makes anew at every call."""
    again = _state(module)
    return [n for n, t in state.items() if again.get(n) is not t]


def _anew(names: list[str], what: str) -> str:
    """Why ``what`` cannot be written into the entries ``_made_anew`` found."""
    return (
        f"{', '.join(map(repr, names[:8]))}{' ...' if len(names) > 8 else ''} are new tensors at every state_dict() "
        f"call (made by get_extra_state or a state_dict hook), so {what} written into them would not stay in the module"
    )


def _as_numpy(tensors: Mapping[str, torch.Tensor]) -> dict[str, NDArray[np.generic]]:
    return {name: tensor_to_numpy(t, f"module tensor '{name}'") for name, t in tensors.items()}


def _write_back(tensors: Mapping[str, torch.Tensor], arrays: Mapping[str, NDArray[np.generic]]) -> None:
    """Write ``arrays`` into their tensors, after checking that no write lands in another entry's memory."""
    by_storage: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        by_storage.setdefault(t.untyped_storage().data_ptr(), []).append((name, t))
    for name in arrays:
        t = tensors[name]
        shared = by_storage[t.untyped_storage().data_ptr()]
        clash = next((o for o, u in shared if u is not t and _overlap(t, u)), None)
        if clash is None and not _overlap(t, t):
            continue
        what = f"shares memory with '{clash}'" if clash else "has values that share memory (an expanded view)"
        raise UnsupportedError(
            f"module tensor '{name}' {what}, so they cannot each take their own seal bits (writing one "
            f"would change the other); give it memory of its own first, e.g. module.{name} = "
            f"module.{name}.clone() for a buffer or nn.Parameter(p.detach().clone()) for a parameter"
        )
    with _torch.no_grad():
        for name, a in arrays.items():
            t = tensors[name]
            src = numpy_to_tensor(a).to(t.device)
            if t.shape == src.shape and t.dtype == src.dtype:
                t.copy_(src)
            else:  # reshaped or retyped: restore the sealed shape and dtype, keeping the object
                t.data = src


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one storage share an element's memory (``a is b``: whether ``a`` holds one twice)."""
    if not (a.numel() and b.numel()):
        return False
    if a is b:  # sorted by stride, each dimension must step over all the smaller ones (else check exactly)
        span = 1
        for stride, size in sorted((st, sz) for sz, st in zip(a.shape, a.stride(), strict=True) if sz > 1):
            if stride < span:
                return bool(_torch.unique(_offsets(a)).numel() < a.numel())
            span += stride * (size - 1)
        return False
    lo, hi = [], []
    for t in (a, b):  # byte range: strides are never negative in torch
        lo.append(t.storage_offset() * t.element_size())
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
        hi.append(lo[-1] + (last + 1) * t.element_size())
    if hi[0] <= lo[1] or hi[1] <= lo[0]:
        return False
    if a.element_size() != b.element_size():
        return True  # the byte ranges meet: take them as overlapping
    return bool(_torch.isin(_offsets(a), _offsets(b)).any())


def _offsets(t: torch.Tensor) -> torch.Tensor:
    """The storage offset (in elements) of every element of ``t``, flat."""
    idx = _torch.tensor(t.storage_offset(), device=t.device)
    for size, stride in zip(t.shape, t.stride(), strict=True):
        idx = idx.unsqueeze(-1) + _torch.arange(size, device=t.device) * stride
    flat: torch.Tensor = idx.reshape(-1)
    return flat


def seal_module(
    module: torch.nn.Module,
    key: Key,
    *,
    level: str = "standard",
    bits: int | None = None,
    metadata: Mapping[str, str] | None = None,
    reseal: bool = False,
) -> ModuleSeal:
    """Seal ``module`` in place (its low mantissa bits change once) and return the header to keep.

    Raises like :func:`paramseal.seal` (for example UnsupportedError when every float tensor
    holds NaN/Inf, UsageError when it is sealed already and not ``reseal``); on error the
    module is left unchanged.
    """
    check_metadata(metadata)  # before it is merged with the ties
    state = _state(module)
    if fresh := _made_anew(module, state):  # the seal bits would go into a temporary: the module would never verify
        raise UnsupportedError(
            f"module state entries {_anew(fresh, 'seal bits')}; keep such state in a registered buffer, or save the "
            "state dict and seal the file"
        )
    live, tied = untie(state)
    # the tied names are sealed as the .pt reader finds them: torch.save(module.state_dict()) then verifies
    arrays = _as_numpy(live)
    refuse_sealed(arrays, reseal)
    sealed = SealConfig(level=level, bits=bits).seal(arrays, key, metadata={**(metadata or {}), **tied})
    _write_back(live, {n: a for n, a in sealed.tensors.items() if not _same(a, arrays[n])})
    return ModuleSeal(sealed.header_json, sealed.header, tuple(live))


def sealed_state_dict(module: torch.nn.Module, header_json: str) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with the seal header in its ``_metadata``, where ParamSeal's ``.pt`` files keep it.

    ``torch.save(sealed_state_dict(net, header), path)`` writes a file that ``paramseal verify`` and
    ``recover`` read as one written by ``paramseal seal``: the header and the sealed user metadata
    come from the file, not from the copies in the weights, which scattered damage destroys long
    before the recovery capacity, and which a tiny model has no room for. ``header_json`` is the
    whole header ``seal_module`` returned (not the cut-down copy read from the weights).
    """
    body = peek_header(header_json)
    user = body.get("user_metadata")
    if not isinstance(user, dict):
        raise UsageError(
            "header_json is not the whole seal header (it holds no user_metadata: the form read from the weights); "
            "pass the header_json seal_module returned"
        )
    state: Any = module.state_dict()
    if not hasattr(state, "_metadata"):  # module.state_dict() attaches it; an override may not
        state = collections.OrderedDict(state)
        state._metadata = collections.OrderedDict()
    keep_metadata(state._metadata, {**{str(k): str(v) for k, v in user.items()}, METADATA_KEY: header_json})
    return cast(dict[str, "torch.Tensor"], state)


def verify_module(module: torch.nn.Module, key: Key, header_json: str | None = None, **kw: Any) -> Report:
    """Verify a live module against its seal; the module is not changed.

    ``header_json`` is what ``seal_module`` returned; None reads the copy embedded
    in the weights. ``kw`` is passed to :func:`paramseal.verify` (e.g. ``metadata=``).
    """
    require_key(key)  # before the header is parsed with it
    state = _state(module)
    live, tied = untie(state)
    arrays = _as_numpy(live)
    header_json = _header_text(header_json, arrays, key)
    rep = verify(arrays, key, header_json, **_with_ties(kw, header_json, key, tied))
    return _in_place(rep, live, header_json, key, _made_anew(module, state))


def recover_module(
    module: torch.nn.Module,
    key: Key,
    header_json: str | None = None,
    *,
    allow_partial: bool = False,
    **kw: Any,
) -> Report:
    """Restore a tampered module in place, bit-exactly, and return the recover report.

    The module is changed only when the report's status is "recovered" (or,
    with ``allow_partial=True``, whenever some values were restored); an intact
    or unrecoverable module is left as it is. Tensors the seal does not know
    (extra parameters) are not touched. ``header_json`` as for ``verify_module``.
    """
    require_key(key)
    state = _state(module)
    live, tied = untie(state)
    current = _as_numpy(live)
    header_json = _header_text(header_json, current, key)
    result = recover(current, key, header_json, **_with_ties(kw, header_json, key, tied))
    rep = _in_place(result.report, live, header_json, key, _made_anew(module, state))
    if rep.status == "recovered" or (allow_partial and rep.restored_count):
        entry = result.metadata.get(TIED_KEY)
        ties = _ties(module, entry) if entry != tied.get(TIED_KEY) else []  # refused before a value is written
        _write_back(live, {n: a for n, a in result.tensors.items() if n in live and not _same(a, current[n])})
        for owner, leaf, tensor in ties:
            setattr(owner, leaf, tensor)
    elif rep.status != "intact":  # left as it was: the summary must not say its values were restored
        rep = dataclasses.replace(rep, written=False)
    return rep


def _header_text(header_json: str | None, arrays: Mapping[str, NDArray[np.generic]], key: Key) -> str:
    """The header text given, or the copy in the weights when None; another type is the caller's mistake."""
    if header_json is not None and not isinstance(header_json, str):
        # checked here: parsing it first would call a ModuleSeal passed whole an edited header
        raise UsageError(
            "header_json must be the seal header text (what seal_module returned as .header_json), "
            f"not {type(header_json).__name__}"
        )
    return header_json or header_from_weights(arrays, key)


def _with_ties(kw: dict[str, Any], header_json: str, key: Key, tied: Mapping[str, str]) -> dict[str, Any]:
    """``kw`` with the module's metadata to check: the sealed metadata with the module's own ties.

    Ties are all the metadata a module has; checking them makes a re-pointed or broken tie
    tampering, as in a ``.pt`` file. A header read from the weights knows the ties by digest (the
    metadata's, or its own digest of the ties where user metadata was sealed beside them), as a
    format that stores no user metadata.
    """
    if "metadata" in kw:
        return kw
    sealed = parse_header(header_json, key).user_metadata
    if sealed is None:
        return {**kw, "metadata": dict(tied), "metadata_kept": False}
    return {**kw, "metadata": {**{k: v for k, v in sealed.items() if k != TIED_KEY}, **tied}}


def _in_place(rep: Report, live: Mapping[str, Any], header_json: str, key: Key, anew: list[str]) -> Report:
    """``rep`` as it applies to the module: not recoverable when recover cannot write what it restores.

    Recover restores values in place: it cannot give a module an entry it lacks (removed or
    renamed) or take one away (added), so such a module would still not verify afterwards; nor
    restore an entry ``state_dict()`` makes anew at each call (``anew``), whose copy it would write.
    """
    if not (rep.recoverable or rep.status == "recovered"):
        return rep
    header = parse_header(header_json, key)
    missing = [t.name for t in header.tensors if t.name not in live]
    ties = (header.user_metadata or {}).get(TIED_KEY)
    aliases = {alias for alias, _name, _pos in _tie_entries(ties)}
    extra = [n for n in rep.extra_tensors if n not in aliases]  # a sealed alias untied: recover re-ties it
    damaged = [n for n in anew if (f := rep.tensors.get(n)) and (f.tampered_blocks or f.issues or f.restored_indices)]
    notes = []
    if missing or extra:
        what = "; ".join(
            f"{label}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
            for label, names in (("sealed but not in the module", missing), ("not sealed", extra))
            if names
        )
        notes.append(
            f"the module's state entries differ from the sealed ones ({what}); recover_module restores values in "
            "place and cannot add, remove or rename a module's parameters or buffers: give the module the sealed "
            "structure (the names of its state_dict at seal time) and recover again"
        )
    if damaged:
        notes.append(
            f"the tampered module state entries {_anew(damaged, 'restored values')}: recover a saved copy of the "
            "state dict (paramseal.recover) and load it into the module with load_state_dict"
        )
    if not notes:
        return rep
    status = "unrecoverable" if rep.status == "recovered" else rep.status
    return dataclasses.replace(rep, status=status, recoverable=False, notes=(*rep.notes, *notes))


def _ties(module: torch.nn.Module, entry: str | None) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """Where each tied name of the sealed metadata ``entry`` points again: (submodule, attribute, its sealed tensor).

    All resolved before any is set: an authentic entry naming a tensor or a submodule the module lacks
    (seal never writes one) is refused, the module left as it was.
    """
    state = _state(module)
    out = []
    for alias, name, _pos in _tie_entries(entry):
        prefix, _, leaf = alias.rpartition(".")
        try:
            owner = module.get_submodule(prefix)
        except AttributeError:
            owner = None
        if owner is None or name not in state:
            missing = f"tensor {name!r}" if owner is not None else f"submodule {prefix!r} (of {alias!r})"
            raise FormatError(
                f"the ParamSeal header is authentic but unreadable: its metadata entry '{TIED_KEY}' ties to "
                f"{missing}, which the module does not have; seal the module again"
            )
        out.append((owner, leaf, state[name]))
    return out


def _tie_entries(entry: str | None) -> list[tuple[str, str, int]]:
    """The (alias, name, position) triples of a sealed ties entry; one seal never writes is refused.

    The entry is authenticated, so only a key holder can write an odd one: refused as header.py
    refuses an authentic header seal never writes, not a traceback.
    """
    if not entry:
        return []
    try:
        tied = _json.loads(entry)
    except ValueError:
        tied = None
    if isinstance(tied, list) and all(
        isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[1], str) and type(e[2]) is int
        for e in tied
    ):
        return [(e[0], e[1], e[2]) for e in tied]
    raise FormatError(
        f"the ParamSeal header is authentic but unreadable: its metadata entry '{TIED_KEY}' is not a list of "
        "[alias, name, position] as seal writes it; seal the module again"
    )


def _same(a: NDArray[np.generic], b: NDArray[np.generic]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


__all__ = ["ModuleSeal", "module_tensors", "recover_module", "seal_module", "sealed_state_dict", "verify_module"]
