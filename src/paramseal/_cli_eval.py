"""The ``attack`` and ``eval`` subcommands (kept beside cli.py so the core CLI stays small)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from ._cli_streams import in_out, quoted
from .attacks import FIELDS, KINDS, AttackSpec, GroundTruth, attack_file
from .errors import OutputError, ParamSealError, UsageError, one_line
from .report import ints_json, write_json_streamed


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``attack`` and ``eval`` to the CLI's subparsers."""
    p = sub.add_parser(
        "attack",
        help="tamper with a model on purpose (drills, evaluation): IN -> OUT, prints exactly what changed",
        description="Apply one seeded attack to IN and write OUT atomically (IN is never modified). "
        "Prints the ground truth: every tensor, flat index and bit that changed (--json for all of it).",
    )
    p.add_argument("input", metavar="IN", help="the model to attack (never modified)")
    p.add_argument("output", metavar="OUT", help="where to write the attacked model")
    p.add_argument("--kind", required=True, choices=KINDS, help="the attack to apply")
    p.add_argument("--seed", type=int, default=0, help="the same seed changes the same bits (default 0)")
    p.add_argument("--n", type=int, help="bits (bitflip; bfa: at most), rows (backdoor-row), pairs (swap)")
    p.add_argument(
        "--fraction",
        type=float,
        metavar="P",
        help="fraction of parameters changed (truncate: fraction of the file's bytes kept, default 0.5)",
    )
    p.add_argument("--sigma", type=float, help="noise: std relative to each tensor's std (default 0.01)")
    p.add_argument("--field", choices=FIELDS, default="any", help="bitflip: restrict to these bits")
    p.add_argument("--tensor", action="append", default=[], metavar="NAME", help="attack only this tensor (repeat)")
    p.add_argument("--mode", help="swap: blocks|rows|tensors; quantize: int8|fp16; metadata: edit|strip|user")
    p.add_argument("--steps", type=int, help="finetune: SGD steps (default 10)")
    p.add_argument("--lr", type=float, help="finetune: learning rate (default 0.01)")
    p.add_argument("--bits", type=int, metavar="K", help="lsb-rewrite / bitflip --field watermark: low bits")
    p.add_argument("--contiguous", action="store_true", help="random-modify: a few runs of consecutive values")
    p.add_argument("--model", help="bfa, finetune: the built-in task model (mlp, cnn or minilm)")
    p.add_argument("--json", action="store_true", help="print the full ground truth as JSON")

    p = sub.add_parser(
        "eval",
        help="measure detection, localisation, recovery and task metrics under an attack battery",
        description="Run a battery (attacks x strengths x levels x dtypes x seeds) on built-in models; write "
        "results.json, results.md and PNG plots into DIR (and a results page with --docs). Runs are kept "
        "in DIR/results.jsonl as they finish: interrupt at any time and rerun the same command to resume. Each "
        "session seals with a fresh key, so the configuration (model, dtype, level) cut short is run again whole.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (also the resume state)")
    p.add_argument("--battery", help="tiny (seconds, the default), docs (~20 min on 2 cores) or full")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="instead of --battery: every attack on this model (mlp, cnn, minilm; repeat)",
    )
    p.add_argument("--dtype", action="append", default=[], help="with --model: F32, F16, BF16 (repeat; default F32)")
    p.add_argument("--level", action="append", default=[], help="with --model: level (repeat; default standard)")
    p.add_argument("--seeds", type=int, help="with --model: seeds per attack (default 1)")
    p.add_argument("--docs", metavar="PAGE", help="also write the results page here (e.g. docs/results.md)")


def run(args: argparse.Namespace) -> int:
    """Run ``attack`` or ``eval``; returns the exit code."""
    if args.cmd == "attack":
        return _attack(args)
    return _eval(args)


def _write_truth(truth: GroundTruth, out: TextIO) -> None:
    """The ground truth as indented JSON, each list of plain values on one line, every changed index and its bits.

    Scattered damage is recorded as hundreds of thousands of index ranges: a line for each number
    made the ground truth of one attack on a 4M-value model 2.56M lines (25 MB). ``to_dict`` lists
    indices and bits only for a tensor of at most 10,000 changed values; here they are streamed for
    every tensor, so a noise or random-modify attack on a large layer still says which bits changed.
    """
    doc = truth.to_dict(0)
    changes = truth.by_name()

    def walk(x: Any, put: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, put) for k, v in x.items()}
        if isinstance(x, list) and not any(isinstance(v, dict) for v in x):
            return put([json.dumps(x)[1:-1]])
        return x

    def build(put: Any) -> Any:
        # each tensor's lists are put in the order they are written: the writer finds them one after another
        tensors = doc.pop("tensors", None)
        d = walk(doc, put)
        if tensors is not None:
            d["tensors"] = {
                name: {
                    **walk(t, put),
                    "indices": put(ints_json(changes[name].indices)),
                    "bits": put(changes[name].bits_json()),
                }
                for name, t in tensors.items()
            }
        return d

    write_json_streamed(out, build, indent=1)
    out.write("\n")


def _attack(args: argparse.Namespace) -> int:
    spec = AttackSpec(
        args.kind,
        seed=args.seed,
        n=args.n,
        fraction=args.fraction,
        field=args.field,
        tensors=tuple(args.tensor),
        mode=args.mode,
        bits=args.bits,
        contiguous=args.contiguous,
        model=args.model,
        sigma=args.sigma,
        steps=args.steps,
        lr=args.lr,
    )
    truth = attack_file(args.input, args.output, spec)
    if args.json:
        _write_truth(truth, sys.stdout)
        return 0
    bits = sum(c.bits_flipped for c in truth.changes)
    if truth.file:  # truncate cuts bytes, not values: a count of 0 values, 0% would say nothing was damaged
        what = "the file was cut short; its values are not counted (a cut file cannot be read as a model)"
    else:
        what = (
            f"{truth.changed_parameters} value(s) in {len(truth.changed_tensors)} tensor(s), {bits} bit(s) changed; "
            f"{100 * truth.tampering_rate:.4g}% of parameters"
        )
    print(f"OK: attacked {in_out(args)} ({args.kind}, seed {args.seed}: {what})")
    if summary := truth.summary():  # names from the model: escaped line by line, as verify's report lines are
        print("\n".join(map(one_line, summary.split("\n"))))
    return 0


def _eval(args: argparse.Namespace) -> int:
    try:
        from .evaluation import BATTERIES, custom, run_eval
    except ImportError as e:  # pragma: no cover - numpy-only installs still import this package
        raise UsageError(f"paramseal eval cannot start: {e}") from None
    if not args.model and (args.dtype or args.level or args.seeds is not None):
        raise UsageError("--dtype, --level and --seeds go with --model; a named --battery fixes them")
    # a --model battery replaces the named one: taking one would drop the other (an empty one too: a typo)
    if args.model and args.battery is not None:
        raise UsageError("--battery and --model cannot be used together; --model runs every attack on that model")
    if not args.model:
        # the default, given here: with --model none may be given; an empty one (an unset variable) is no name
        args.battery = "tiny" if args.battery is None else args.battery
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds} must be at least 1")
    if args.model:
        battery = custom(
            tuple(args.model), tuple(args.dtype or ["F32"]), tuple(args.level or ["standard"]), args.seeds or 1
        )
    elif args.battery in BATTERIES:
        battery = BATTERIES[args.battery]
    else:
        raise UsageError(f"unknown battery '{args.battery}'; choose one of {', '.join(BATTERIES)} or pass --model")
    command = "paramseal " + shlex.join(_canonical(args))
    for what, d in (("--out", Path(args.out)), ("--docs", Path(args.docs).parent if args.docs else None)):
        if d is not None and (d.exists() and not d.is_dir()):
            raise UsageError(f"{what} '{d}' is a file, not a folder; choose a folder for the results")
    if args.docs and Path(args.docs).is_dir():  # found now, not after the whole battery has run
        raise UsageError(f"--docs '{args.docs}' is a directory; give a file path for the results page")
    # OUT itself may hold the page: the battery makes it before the page is written
    docs_dir = Path(args.docs).parent if args.docs else None
    if docs_dir is not None and not docs_dir.is_dir() and docs_dir.resolve() != Path(args.out).resolve():
        raise UsageError(f"--docs '{args.docs}': its folder does not exist; create it first")
    try:
        s = run_eval(battery, Path(args.out), docs=Path(args.docs) if args.docs else None, command=command)
    except ParamSealError:  # its own errors (InputError, OutputError) say what failed: an OSError too
        raise
    except OSError as e:  # the folder cannot be made or written (a read-only place, a full disk), or a read failed
        if e.filename is None or Path(e.filename).resolve().is_relative_to(Path(args.out).resolve()):
            raise OutputError(f"cannot write the results in '{args.out}': {e.strerror or e}") from None
        raise OutputError(f"eval failed on '{e.filename}': {e.strerror or e}") from None
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP as the program unwinds them (their own exit code)
        print(
            f"\ninterrupted; finished configurations are kept in {quoted(args, args.out)}/results.jsonl: rerun the "
            "same command to resume (the configuration cut short is run again whole, on a new seal)",
            file=sys.stderr,
        )
        return 128 + int(getattr(e, "signum", 2))
    fp = "no false positives" if not s.false_positives else f"{s.false_positives} FALSE POSITIVE(S)"
    print(f"OK: {s.runs} runs ({s.new_runs} new) on {s.configs} sealed configurations in {s.seconds:.0f}s; {fp}")
    for f in s.files:
        print(f"  wrote {quoted(args, f)}")
    return 0 if not s.false_positives else 1


def _canonical(args: argparse.Namespace) -> list[str]:
    """The eval command line that reproduces this run (recorded in the results page)."""
    argv = ["eval"]
    if args.model:
        for m in args.model:
            argv += ["--model", m]
        for d in args.dtype:
            argv += ["--dtype", d]
        for lv in args.level:
            argv += ["--level", lv]
        argv += ["--seeds", str(args.seeds or 1)]
    else:
        argv += ["--battery", args.battery]
    argv += ["--out", args.out]
    if args.docs:
        argv += ["--docs", args.docs]
    return argv
