"""``paramseal inspect``: a model's seal settings, or what each level would give it, without a key.

The bounds are those of the layout seal chooses for this model (`_strata.layout_of`), not of a
model of fp32 values only; a sealed model's come from its header's table, read untrusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _embed, _embed_find, _strata
from ._layout import TensorSpec, block_count
from ._weights_header import typed_voids
from .errors import ParamSealError, UnsupportedError, cut, one_line
from .formats import Loaded
from .header import METADATA_KEY, MalformedHeaderError, missing_fields, no_fields, peek_header
from .levels import FLOATS, LEVELS, bits_for, capacity, dtype_name
from .seal import non_finite


def describe(p: Path, loaded: Loaded) -> dict[str, Any]:
    """What `paramseal.files.inspect_file` reports on the model ``loaded`` from ``p``."""
    h, where, problem = _read_header(p, loaded)
    dtypes: dict[str, int] = {}
    odd = ""
    for name, a in loaded.tensors.items():
        try:
            dt = dtype_name(a.dtype)
        except UnsupportedError as e:
            odd = odd or f"'{p}': tensor '{name}': {e}"
            dt = str(a.dtype)  # in a sealed model, a tensor retyped: verify reports it
        dtypes[dt] = dtypes.get(dt, 0) + int(a.size)
    info: dict[str, Any] = {
        "file": str(p),
        "tensors": len(loaded.tensors),
        "parameters": dtypes,
        "blocks": sum(block_count(int(a.size)) for a in loaded.tensors.values()),
        "sealed": h is not None,
        "tensor_list": tensor_list(loaded, h),
    }
    if h is not None and problem:
        info["header_problem"] = (
            f"{problem}; the copy shown, from the {where}, is unauthenticated. Run 'paramseal verify' with the key: "
            "it checks that copy and the model ('paramseal recover' writes the header back)"
        )
    elif h is not None and (missing := missing_fields(h)):
        place = "file's metadata" if where == "metadata" else where
        info["header_problem"] = (
            f"'{p}': the ParamSeal header in the {place} has {no_fields(missing)}: it was edited or corrupted and "
            "does not authenticate. Run 'paramseal verify' with the key: it uses an intact copy of the header in the "
            "weights, if there is one, else pass --header-from FILE, a kept copy of the sealed header"
        )
    if h is not None:
        irs = h.get("code") == _strata.CODE_NAME
        shape = ("strata", "outer_host") if irs else ("lanes",)
        info["seal"] = {
            k: "(missing)" if k not in h else _shown(h[k]) if isinstance(h[k], str | int | None) else "(malformed)"
            for k in ("scheme", "level", "bits", "block", "mac", "code", *shape, "key_fingerprint", "salt")
        }
        info["seal"]["authenticated"] = "not checked (inspect has no key; run verify)"
        info["seal"]["header_in"] = where
        table = h.get("tensors")
        info["seal"]["header_copies_in_weights"] = h.get("carriers", [])  # the carrier tensors' indices in the table
        info["seal"]["header_copies_in_tensors"] = carrier_names(h.get("carriers", []), table)
        # no carrier, no copy: a small model keeps its header in the metadata only (the field's absence means 1)
        info["seal"]["copies_per_carrier"] = h.get("header_copies", 1) if h.get("carriers") else 0
        ks: dict[str, int] = {}
        for t in table if isinstance(table, list) else []:  # untrusted here: keep only well-formed entries
            if (
                isinstance(t, dict)
                and isinstance(t.get("dtype"), str)
                and isinstance(t.get("k"), int)
                and (t["dtype"] not in FLOATS or 0 <= t["k"] < FLOATS[t["dtype"]].mantissa)
            ):  # the widest k of a dtype: its small tensors (too small to carry bits) have k = 0
                ks[t["dtype"]] = max(ks.get(t["dtype"], 0), t["k"])
        label = info["seal"]["level"] if h.get("bits") is None else f"bits={info['seal']['bits']}"
        host = h.get("outer_host")
        irs_host = host if irs and isinstance(host, int) and 0 <= host <= 8 else None
        info["levels"] = {str(label): caps(ks, irs_host, free_strata(table, irs_host))}
    else:
        info["levels"] = {}
        records, _ = _embed.sealed_traces(loaded.tensors)
        if problem:  # the metadata names a seal whatever the weights hold: seal refuses it
            info["seal_unreadable"] = (
                f"{problem}, and inspect reads no copy of it in the weights. Run 'paramseal verify' with the key (it "
                "also rebuilds damaged copies; if none is left, pass --header-from FILE, a kept copy of the sealed "
                "header); do not seal it again unless you approve its weights"
            )
        elif records:  # as seal refuses it
            info["seal_unreadable"] = (
                f"'{p}': the model was sealed (ParamSeal records remain in {records} of its tensors), but no copy of "
                "its header can be read: they were tampered with, or the metadata that held the header is gone. Run "
                "'paramseal verify' (with --header-from FILE, a kept copy of the sealed header); do not seal it "
                "again unless you approve its weights"
            )
        elif _embed_find.copies_located(loaded.tensors):  # a burst took the records only
            info["seal_unreadable"] = (
                f"'{p}': the model was sealed (copies of a seal header lie where seal puts them), but the records that "
                "say where are gone: they were tampered with. inspect has no key to authenticate those copies; "
                "'paramseal verify' finds them with the key. Do not seal it again unless you approve its weights"
            )
        if odd and "seal_unreadable" not in info:  # as seal refuses it
            raise UnsupportedError(odd)
        if odd:  # no level applies to a model that was sealed: its lost header is what to report
            return info
        plain = non_finite(loaded.tensors)  # seal takes these as data (k = 0): they fill strata, carry no parity
        carrying = {dtype_name(a.dtype) for n, a in loaded.tensors.items() if n not in plain}
        if not loaded.tensors:  # as seal words it
            info["cannot_seal"] = "it has no tensors"
        elif not carrying & set(FLOATS):
            what = "its float tensors each hold at least one NaN or Inf value" if plain else "it has no float tensors"
            info["cannot_seal"] = f"{what}: the watermark lives in float mantissas"
        if "cannot_seal" in info:  # seal refuses it (exit 3): no level would protect it
            return info
        for lv in LEVELS:
            ks = {dt: bits_for(dt, lv, None) if dt in carrying else 0 for dt in dtypes}
            specs = [
                TensorSpec(
                    name,
                    (dt := dtype_name(a.dtype)),
                    tuple(int(d) for d in a.shape),
                    0 if name in plain else bits_for(dt, lv, None),
                )
                for name, a in loaded.tensors.items()
            ]
            if _strata.applies(specs):  # the layout seal would choose: a small model has no outer code
                _, sf, host = _strata.layout_of(specs)
                info["levels"][lv] = caps(ks, host, sf)
            else:
                info["levels"][lv] = caps(ks, None)
    return info


def tensor_list(loaded: Loaded, h: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each tensor in file order: name, dtype, shape, values, and ``k`` as the untrusted header table gives it."""
    ks: dict[str, int] = {}
    table = h.get("tensors") if h is not None else None
    for t in table if isinstance(table, list) else []:
        if isinstance(t, dict) and isinstance(t.get("name"), str) and type(t.get("k")) is int:
            ks[t["name"]] = t["k"]
    out: list[dict[str, Any]] = []
    for name, a in loaded.tensors.items():
        try:
            dt = dtype_name(a.dtype)
        except UnsupportedError:
            dt = str(a.dtype)
        row = {"name": name, "dtype": dt, "shape": [int(d) for d in a.shape], "values": int(a.size)}
        out.append(row | ({"k": ks[name]} if name in ks else {}))
    return out


def list_text(info: dict[str, Any]) -> list[str]:
    """``inspect --list``'s lines: one per tensor (per shard for a folder), names escaped as error lines are."""
    shards = info.get("per_shard")
    groups = [(f"shard {_shown(n)}:", i.get("tensor_list", [])) for n, i in shards.items()] if shards else []
    groups = groups or [("tensors (name, dtype, shape, values, watermark bits k):", info.get("tensor_list", []))]
    lines: list[str] = []
    for title, rows in groups:
        lines.append(title)
        for r in rows:
            k = f"  k={r['k']}" if "k" in r else ""
            shape = "x".join(map(str, r["shape"])) or "scalar"
            lines.append(f"  {_shown(r['name'])}  {r['dtype']}  {shape}  {r['values']}{k}")
    return lines


def _read_header(p: Path, loaded: Loaded) -> tuple[dict[str, Any] | None, str, str]:
    """The (untrusted) header to show, where it lies, and what is wrong with the metadata's, if it is malformed.

    A metadata entry that is no header (emptied, cut short, not JSON) gives way to a copy in the weights,
    as in verify; a damaged copy gives way to the next.
    """
    problem = ""
    if (text := loaded.metadata.get(METADATA_KEY)) is not None:
        try:
            return peek_header(text), "metadata", ""
        except MalformedHeaderError as e:
            problem = (
                f"'{p}': the ParamSeal header in the file's metadata is malformed ({e.why}): it was edited or corrupted"
            )
    for tensors in (loaded.tensors, *typed_voids(loaded.tensors)):  # np.savez's raw bfloat16 bytes too
        for name, copy in _embed.header_copies(tensors):
            try:
                return peek_header(copy), f"weights (tensor '{name}')", problem
            except MalformedHeaderError:
                continue
    return None, "", problem


def carrier_names(carriers: Any, table: Any) -> list[str] | str:
    """The names of the tensors holding header copies, from the (untrusted) header's table."""
    if not isinstance(carriers, list) or not isinstance(table, list):
        return "(malformed)"
    names: list[str] = []
    for i in carriers:
        t = table[i] if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(table) else None
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            return "(malformed)"
        names.append(_shown(t["name"]))
    return names


def _shown(value: Any) -> Any:
    """An untrusted header's string as inspect may print it; other values as they are.

    Escaped as error lines are (`errors.one_line`: a terminal's escape sequences, a forged line) and cut to a
    length a line can hold.
    """
    return cut(one_line(value), _SHOWN) if isinstance(value, str) else value


_SHOWN = 200  # characters of an untrusted header string shown (a key fingerprint is 16, a tensor name a few dozen)


def free_strata(table: Any, host: int | None) -> int:
    """The fp32 strata of a sealed irs4 model, from its (untrusted) header table; 255 if it cannot tell."""
    if host is None or not isinstance(table, list):
        return _strata.N_POS
    try:
        specs = [
            TensorSpec(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]), int(t["k"])) for t in table
        ]
        if not _strata.applies(specs):
            return _strata.N_POS
        return _strata.layout_of(specs)[1]
    except (KeyError, TypeError, ValueError, ParamSealError):
        return _strata.N_POS


def caps(ks: dict[Any, Any], host: int | None, free_strata: int | None = None) -> dict[str, Any]:
    """Bounds per dtype; ``host`` is the irs4 outer code's hosting (None: the lane code).

    ``free_strata``: the model's fp32 strata under irs4 (None: all 255, a model of fp32 values only).
    """
    irs = host is not None
    out: dict[str, Any] = {}
    for dt, k in ks.items():
        if dt in FLOATS and isinstance(k, int) and k > 0:
            c = capacity(dt, k)
            out[dt] = {"k": k, "max_relative_change": c.max_relative_change}
            if irs and dt == "F32" and k in _strata.KS:
                ic = _strata.capacity(k, host or 0, _strata.N_POS if free_strata is None else free_strata)
                out[dt] |= {
                    "code": "irs",
                    "contiguous_bound": round(ic["contiguous_bound"], 4),
                    "scattered_radius_per_group": round(ic["scattered_radius"], 4),
                }
            else:
                out[dt] |= {
                    "code": "lanes",
                    "contiguous_bound": round(c.erasure_bound, 4),
                    "unknown_positions_bound": round(c.error_bound, 4),
                    "scattered_bound": round(c.scattered_bound, 6),
                }
        elif dt in FLOATS:  # every tensor of the dtype holds NaN or Inf
            out[str(dt)] = {"k": 0, "note": "NaN/Inf values: sealed as data, authenticated and protected, no bits"}
        else:
            out[str(dt)] = {"k": 0, "note": "integer/bool: authenticated and protected, carries no bits"}
    return out


__all__ = ["caps", "carrier_names", "describe", "free_strata", "list_text", "tensor_list"]
