"""What each ``paramseal`` command does once its arguments are parsed: call the library, print the outcome.

Separate from cli.py, which parses the arguments, guards the streams and turns errors into exit
codes; ``attack`` and ``eval`` are in _cli_eval.py, ``keygen`` in _cli_keys.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, cast

from . import _cli_eval, _cli_keys, _inspect, _pages, _paths, files, sharded
from ._cli_streams import in_out, quoted, warn
from ._findings import RETYPED
from ._layout import TensorSpec
from .errors import ParamSealWarning, UsageError, one_line
from .formats.registry import adapter_for
from .keys import Key
from .levels import BLOCK, FLOATS, bound_text, max_relative_change
from .report import Report, seal_id_arg


def _print_json(rep: Report, extra: dict[str, Any] | None = None) -> None:
    """The report's JSON on stdout, streamed: a report of millions of values is never one string."""
    rep.write_json(sys.stdout, extra)
    sys.stdout.write("\n")


_FOLDER_IN_PLACE = "--in-place works for single files only; a sharded checkpoint is written to a new folder"


_NO_COPY = (
    "no copy of the seal header fits in the weights (copies may take at most 2% of the blocks): it is in "
    "the file's metadata only, so a tool that drops the metadata leaves the model unverifiable; keep a copy "
    "with 'seal --header-out FILE.json' (then verify/recover --header-from FILE.json)"
)
_NO_COPY_SHARDS = (
    "no copy of the seal header fits in the weights of shard(s) {} (copies may take at most 2% of the blocks): "
    "each keeps it in its metadata only, so a tool that drops a shard's metadata leaves that shard unverifiable; "
    "--header-out keeps one file's header, so keep a copy of those sealed shards as written (then verify/recover "
    "the shard's file alone with --header-from its copy)"
)
_SEAL_ID = "seal id: {} (keep it: verify --expect-seal ID refuses any other seal of this model)"


def _header(args: argparse.Namespace, key: Key) -> str | None:
    if args.header_from is None:
        return None
    if sharded.is_sharded(Path(args.input)):
        raise UsageError(
            f"--header-from takes one file's header, and each shard of '{args.input}' carries its own: drop "
            "--header-from to check the folder, or give one shard's file as IN with the header kept for it"
        )
    return files.read_header(args.header_from, key)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run(args: argparse.Namespace) -> int:
    if args.cmd in ("seal", "verify", "recover", "eval", "demo"):
        # before any work: read where scratch is first needed, a bad setting passed an intact verify
        # and failed a recover only after its check (the whole model read)
        _pages.scratch_budget()
    match args.cmd:
        case "keygen":
            return _cli_keys.keygen(args)
        case "seal" if sharded.is_sharded(Path(args.input)):
            if args.in_place and _paths.resolved(Path(args.output)) != Path(args.input).resolve():
                raise UsageError(_FOLDER_IN_PLACE)  # it was ignored (onto itself, the folder writer says why)
            if args.header_out is not None:
                raise UsageError("--header-out keeps one file's header; the shards of a checkpoint each keep their own")
            key = _cli_keys.key_given(args)
            names = sharded.seal_dir(
                Path(args.input),
                Path(args.output),
                key,
                level=args.level,
                bits=args.bits,
                code=args.code,
                reseal=args.reseal,
            )
            sid, widths = sharded.seal_id(Path(args.output), key), sharded.float_widths(Path(args.output), names)
            if args.json:
                codes = {_code_name(sharded._sealed_header(Path(args.output), s)["code"]) for s in names}
                code = codes.pop() if len(codes) == 1 else ""  # shards sealed with different codes: as level ""
                _seal_json(args, key, sid, code, widths, shards=len(names))
            else:
                print(f"OK: sealed {len(names)} shard(s) of {in_out(args)} (each self-contained)")
                print(_SEAL_ID.format(sid))
            _warn_bits(args, widths)
            if bare := sharded.without_header_copy(Path(args.output), names):
                named = ", ".join(f"'{quoted(args, s)}'" for s in bare)
                print(f"note: {_NO_COPY_SHARDS.format(named)}", file=sys.stderr)
            return 0
        case "seal":
            keep = (
                None if args.header_out is None else _paths.check_header_out(args.header_out, args.input, args.output)
            )
            key = _cli_keys.key_given(args)
            with _library_warnings() as warned:
                sealed = files.seal_file(
                    args.input,
                    args.output,
                    key,
                    level=args.level,
                    bits=args.bits,
                    in_place=args.in_place,
                    code=args.code,
                    reseal=args.reseal,
                    header_out=keep,
                )
            h = sealed.header
            ks = sorted({(t.dtype, t.k) for t in h.tensors if t.k})
            desc = ", ".join(f"{dt} k={k}" for dt, k in ks)
            code = "irs" if h.irs else "lanes"
            how = f"level {h.level}" if h.bits is None else f"--bits {h.bits}"
            n = _count(len(h.tensors), "tensor")
            if args.json:
                _seal_json(args, key, h.salt.hex(), code, ks, tensors=len(h.tensors), header_out=keep)
            else:
                print(f"OK: sealed {in_out(args)} ({n}, {desc}, {how}, code {code})")
                print(_SEAL_ID.format(h.salt.hex()))
            _warn_bits(args, ks)
            _note_plain(args, h.tensors)
            # a .pt's own warning says it (the state dict's entry is what a re-save drops)
            if not h.carriers and keep is None and adapter_for(sealed.path).name != "pytorch":
                print(f"note: {_NO_COPY}", file=sys.stderr)
            for w in warned:
                warn(args, w)
            if keep is not None and not args.json:
                print(f"OK: kept the seal header in {quoted(args, keep)} (for --header-from)")
            return 0
        case "verify":
            expect = seal_id_arg(args.expect_seal)
            key = _cli_keys.key_given(args)
            header = _header(args, key)
            if sharded.is_sharded(Path(args.input)):
                rep = sharded.verify_dir(Path(args.input), key, tensors=args.tensors, expect_seal=expect)
            else:
                rep = files.verify_file(args.input, key, tensors=args.tensors, header=header, expect_seal=expect)
            if args.json:
                _print_json(rep)
            elif rep.status == "intact" and rep.partial:
                rest = "the rest was not checked" if rep.checked_blocks != rep.total_blocks else "every tensor matched"
                print(
                    f"OK: the tensors of {quoted(args, args.input)} matching '{quoted(args, args.tensors)}' are intact "
                    f"({rep.checked_blocks} of {rep.total_blocks} blocks verified; {rest})"
                )
                if rep.notes:
                    print(rep.summary())
            elif rep.status == "intact":
                blocks = "1 block" if rep.total_blocks == 1 else f"{rep.total_blocks} blocks"
                print(f"OK: {quoted(args, args.input)} is intact ({blocks} verified)")
                if rep.notes:
                    print(rep.summary())
            else:
                how = "recoverable: run 'paramseal recover'" if rep.recoverable else "NOT fully recoverable"
                if rep.recoverable and rep.partial:  # the tensors not read were taken as intact
                    how = "recoverable as far as the tensors checked show; "
                    how += f"{rep.checked_blocks} of {rep.total_blocks} blocks verified"
                print(f"FAIL: {quoted(args, args.input)} was tampered with ({how})\n{rep.summary()}")
            return rep.exit_code
        case "recover":
            expect = seal_id_arg(args.expect_seal)
            key = _cli_keys.key_given(args)
            _paths.never_the_header_from(Path(args.output), args.header_from, Path(args.input), args.in_place)
            header = _header(args, key)
            if sharded.is_sharded(Path(args.input)):
                if args.in_place and _paths.resolved(Path(args.output)) != Path(args.input).resolve():
                    raise UsageError(_FOLDER_IN_PLACE)  # it was ignored (onto itself, the folder writer says why)
                # a re-sharded single-file seal is written as one file, a .pt warned of as recover_file's is
                with _library_warnings() as warned:
                    rep = sharded.recover_dir(
                        Path(args.input), Path(args.output), key, allow_partial=args.allow_partial, expect_seal=expect
                    )
                output = args.output if rep.written else None
            else:
                with _library_warnings() as warned:  # printed after the verdict, as seal prints its own
                    res = files.recover_file(
                        args.input,
                        args.output,
                        key,
                        allow_partial=args.allow_partial,
                        in_place=args.in_place,
                        header=header,
                        expect_seal=expect,
                    )
                rep, output = res.report, None if res.path is None else str(res.path)
            if args.json:
                # exit 2 is a partial result written (--allow-partial) or nothing: `restored` alone cannot say
                _print_json(rep, {"written": output is not None, "output": output})
            elif rep.status == "intact":
                print(f"OK: {quoted(args, args.input)} was intact; written to {quoted(args, args.output)}")
                if rep.notes:
                    print(rep.summary())
            elif rep.status == "recovered":
                print(f"OK: recovered {in_out(args)} ({_what_recover_did(rep)})")
                print(rep.summary())
            else:
                out = quoted(args, args.output)
                wrote = "nothing written" if output is None else f"partial result written to {out}"
                # values whose sealed bits are unknown (whole blocks, or irs4's words of failed groups): which of
                # them changed is unknown, so "lost" would overstate it (a 30% prune is 100% of the values of the
                # blocks). None counted: the reason is elsewhere (a graph, a missing shard); the summary says it
                gone = rep.unrecoverable_count
                lost = f"{_count(gone, 'value')} unrecoverable; " if gone else ""
                print(f"FAIL: {quoted(args, args.input)} cannot be fully recovered ({lost}{wrote})\n{rep.summary()}")
            for w in warned:
                warn(args, w)
            return rep.exit_code
        case "inspect":
            if sharded.is_sharded(Path(args.input)):
                info = sharded.inspect_dir(Path(args.input))
            else:
                info = files.inspect_file(args.input)
            if not args.list:  # the tensor table only when asked for: a large model has hundreds of entries
                info.pop("tensor_list", None)
                for each in info.get("per_shard", {}).values():
                    each.pop("tensor_list", None)
            text = "\n".join([_inspect_text(info), *(_inspect.list_text(info) if args.list else [])])
            print(json.dumps(info, indent=2) if args.json else text)
            return 0
        case "demo":
            from .demo import run_demo

            return run_demo(seed=args.seed, keep=args.keep)
        case "attack" | "eval":
            return _cli_eval.run(args)
    raise AssertionError(args.cmd)  # argparse rejects unknown commands


def _code_name(code: str) -> str:
    return "irs" if code.startswith("irs") else "lanes"


def _seal_json(
    args: argparse.Namespace,
    key: Key,
    seal_id: str,
    code: str,
    widths: Iterable[tuple[str, int]],
    *,
    tensors: int | None = None,
    shards: int | None = None,
    header_out: Path | None = None,
) -> None:
    """The outcome of `seal` for a script: the seal id to record and the settings used (notes stay on stderr).

    The same keys for a file and a folder: ``tensors`` is null for a folder, ``shards`` for a file.
    """
    doc = {
        "kind": "seal",
        "status": "sealed",
        "input": args.input,
        "output": args.output,
        "seal_id": seal_id,
        "key_fingerprint": key.fingerprint,
        "level": args.level if args.bits is None else None,
        "bits": args.bits,
        "code": code,
        "k": {dt: k for dt, k in sorted(set(widths))},
        "tensors": tensors,
        "shards": shards,
        "header_out": None if header_out is None else str(header_out),
    }
    print(json.dumps(doc, indent=2))


def _what_recover_did(rep: Report) -> str:
    """Values restored and tensors moved back: a swap undone restores no value, but is not "nothing needed"."""
    done = rep.restored_count
    swapped, renamed = len(rep.moved_by("swapped")), len(rep.moved_by("renamed"))
    parts = [f"{_count(done, 'value')} restored"] if done else []
    if swapped:
        parts.append(f"{_count(swapped, 'swapped tensor')} moved back in place")
    if renamed:
        whose = "its sealed name" if renamed == 1 else "their sealed names"
        parts.append(f"{_count(renamed, 'renamed tensor')} written under {whose}")
    retyped = sum(any(i.startswith(RETYPED) for i in f.issues) for f in rep.tensors.values())
    if retyped:  # a model widened after sealing (BF16 saved as F32), or bytes relabelled (F32 marked I32)
        parts.append(f"{_count(retyped, 'retyped tensor')} written back in the dtype sealed")
    # none: only the metadata or a shard index needed fixing; the summary's lines say which
    return ", ".join(parts) or "no value needed restoring"


def _warn_bits(args: argparse.Namespace, widths: Iterable[tuple[str, int]]) -> None:
    """Warn about each float dtype sealed with more bits than level strong gives it (an explicit --bits)."""
    for dt, k in sorted(set(widths)):
        strong = FLOATS[dt].levels["strong"] if dt in FLOATS else k
        if k > strong:
            warn(
                args,
                f"k={k} changes {dt} weights by up to {bound_text(max_relative_change(dt, k), 1)} of their "
                f"magnitude, against {bound_text(max_relative_change(dt, strong), 1)} at level strong; check the "
                "model's accuracy before you use it",
            )


@contextmanager
def _library_warnings() -> Iterator[list[str]]:
    """The library's `ParamSealWarning` messages, kept to print as this program's ``warning:`` lines.

    Not also shown by Python (once, not twice); other warnings are shown as ever.
    """
    kept: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParamSealWarning)  # each seal's own, though an earlier one said the same
        show = warnings.showwarning

        def keep(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
            if issubclass(category, ParamSealWarning):
                kept.append(str(message))
            else:
                show(message, category, *args, **kw)

        warnings.showwarning = keep
        yield kept


def _note_plain(args: argparse.Namespace, specs: Iterable[TensorSpec]) -> None:
    """Name the float tensors sealed as data because they hold NaN or Inf (smaller ones are data anyway).

    The names masked as on stdout (`quoted`): the command line's key-like words never reach any line.
    """
    plain = [s.name for s in specs if s.dtype in FLOATS and s.k == 0 and s.numel >= BLOCK]
    if plain:
        shown = ", ".join(repr(n) for n in plain[:8]) + (", ..." if len(plain) > 8 else "")
        said = (
            f"{len(plain)} float tensor(s) hold NaN or Inf values and carry no watermark bits ({shown}); "
            "they are authenticated and recoverable as integer tensors are, and their values are unchanged"
        )
        print(f"note: {quoted(args, said)}", file=sys.stderr)


FEW_BLOCKS = 64  # below this, inspect warns that its capacity bounds are asymptotic


def _pct(fraction: float) -> str:
    """A bound given to 4 places (inspect's JSON) as a percentage to 1 place, halves rounded up.

    0.4765 (the bound 0.47653) is 47.7, not the 47.6 that formatting the binary float 47.65 gives.
    """
    return str((Decimal(str(fraction)) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _seal_fields(seal: dict[str, Any]) -> Iterator[str]:
    """The seal settings as ``name=value``: header copies by tensor name, no bits unless --bits set them."""
    for k, v in seal.items():
        if k == "bits" and v is None:  # the level's own bits: the level says it
            continue
        if k == "level" and seal.get("bits") is not None:  # --bits set them: the header's default level set nothing
            continue
        if k == "header_copies_in_weights" and "header_copies_in_tensors" in seal:
            names = seal["header_copies_in_tensors"]
            if isinstance(names, list) and names:  # as header_in names its tensor
                v = f"{'tensor' if len(names) == 1 else 'tensors'} {' and '.join(map(repr, names))}"
            else:
                v = names or "none"
        elif k == "header_copies_in_tensors":
            continue
        elif k == "set_id" and v is None and seal.get("one_file_seal_id"):
            v = "none (a model sealed as one file and re-sharded since: no set records)"
        elif k == "set_id" and v is None:  # a sharded folder's: its shards' records name no one set
            v = "none (the shards' set records name no one set; run verify)"
        yield f"{k}={v}"


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _inspect_text(info: dict[str, object]) -> str:
    lines = [
        f"{info['file']}: {_count(cast(int, info['tensors']), 'tensor')}, parameters by dtype {info['parameters']}"
    ]
    blocks = info.get("blocks")
    if isinstance(blocks, int) and 0 < blocks < FEW_BLOCKS and info.get("levels"):  # bounds below to qualify
        lines.append(
            f"note: only {blocks} block(s) of 64 values: damage counts in whole blocks and the bounds below hold "
            "for models of many blocks; one damaged block here may be beyond recovery"
        )
    if "shards" in info:
        lines[0] += f", in {info['shards']} shards ({info['sealed_shards']} sealed)"
        odd = info.get("mismatched_shards")
        if isinstance(odd, list) and odd:
            lines.append(f"WARNING: shards sealed differently or not at all: {', '.join(map(str, odd))}")
        for name in _list(info.get("missing_shards")):
            lines.append(f"WARNING: shard '{name}' is missing from the folder; run verify")
        unreadable = info.get("unreadable_shards")
        for name, why in unreadable.items() if isinstance(unreadable, dict) else ():
            lines.append(f"WARNING: shard '{name}' cannot be read: {why}")
        unlisted = info.get("unlisted_files")
        for name, shard in unlisted.items() if isinstance(unlisted, dict) else ():
            said = f"its set record (unchecked) names shard '{shard}'" if shard else "it carries no set record"
            by = "the index" if info.get("index") else "the set records"  # a lost index: the records list the shards
            lines.append(f"WARNING: file '{name}' is not named by {by}; {said}")
        if info.get("index_problem"):
            lines.append(f"WARNING: {info['index_problem']}")
        fix = "run verify" if info["sealed_shards"] else "seal refuses the folder until the index is fixed"
        lines += [
            f"WARNING: the index disagrees with its shards: {w}; {fix}" for w in _list(info.get("index_disagreements"))
        ]
        warned = info.get("shard_warnings")
        lines += [f"WARNING: {w}" for w in (warned.values() if isinstance(warned, dict) else ())]
        each = info.get("per_shard")
        seal = info.get("seal")
        if isinstance(seal, dict) and seal.get("one_file_seal_id"):
            lines.append(
                f"note: every sealed shard carries the header of one seal (id {seal['one_file_seal_id']}) and none a "
                "set record: a model sealed as one file and re-sharded since (save_pretrained with max_shard_size "
                "writes so); verify checks it as that one model, and recover restores the one file"
            )
        elif isinstance(each, dict) and isinstance(seal, dict) and seal.get("set_id") is None:
            named = ", ".join(f"{n}: {i['set_id'] or 'none'}" for n, i in each.items() if "set_id" in i)
            lines.append(f"WARNING: the sealed shards' set records (read without the key) name no one set id: {named}")
        if not info["tensors"] and not info["sealed_shards"]:  # every shard missing or unreadable
            lines.append("no shard of the set is there to describe; run verify")
            return "\n".join(map(one_line, lines))
    if info.get("cannot_seal"):
        lines.append(f"cannot be sealed: {info['cannot_seal']}")
    if info.get("header_problem"):
        lines.append(f"WARNING: {info['header_problem']}")
    seal = info.get("seal")
    levels = info["levels"]
    assert isinstance(levels, dict)
    if isinstance(seal, dict):
        lines.append("sealed: " + ", ".join(_seal_fields(seal)))
    elif info.get("seal_unreadable"):
        lines.append(f"WARNING: {info['seal_unreadable']}")
        lines.append("no readable seal header" + ("; what each level would give a fresh seal:" if levels else ""))
    elif info.get("cannot_seal"):  # seal refuses it: listing levels would promise a protection it never gets
        lines.append("not sealed; no level applies: seal refuses this model")
    else:
        lines.append("not sealed; what each level would give:")
    for lv, caps in levels.items():
        for dt, c in caps.items():
            rel = bound_text(c["max_relative_change"]) if c.get("k") else ""  # rounded up: never under the bound
            if c.get("k") and c.get("code") == "irs":
                lines.append(
                    f"  {lv:<9} {dt:<5} k={c['k']:<3} max relative change {rel}  code irs: "
                    f"recovers contiguous damage up to {_pct(c['contiguous_bound'])}% and scattered values up to "
                    f"{_pct(c['scattered_radius_per_group'])}% (per-group bounds; see README)"
                )
            elif c.get("k"):
                lines.append(
                    f"  {lv:<9} {dt:<5} k={c['k']:<3} max relative change {rel}  code lanes: "
                    f"recovers up to {_pct(c['contiguous_bound'])}% of parameters in tampered blocks "
                    f"(bound; scattered values: under {100 * c['scattered_bound']:.2g}%, where their blocks reach "
                    "the bound; recovery stops short of it)"
                )
            else:
                lines.append(f"  {lv:<9} {dt:<5} {c['note']}")
    return "\n".join(map(one_line, lines))  # names from the folder and its index: their control characters escaped
