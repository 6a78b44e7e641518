"""The ``paramseal`` argument parser: its commands and options, and the checks on what was given.

Separate from cli.py, which runs the program: building the parser and refusing bad usage
(exit 3, not argparse's 2, which means "not fully recoverable" here) is one concern.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any, NoReturn

from . import __version__, _cli_eval
from .errors import one_line
from .keys import redact
from .levels import FLOATS, LEVELS
from .report import SEAL_ID


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="KEYFILE", action=_Once, help="key file (default: the PARAMSEAL_KEY variable)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report")


def _in_out(p: argparse.ArgumentParser, what_in: str, what_out: str) -> None:
    p.add_argument("input", metavar="IN", help=what_in)
    p.add_argument("output", metavar="OUT", help=what_out)


def _header_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--header-from",
        metavar="FILE",
        action=_Once,
        help="take the seal header from FILE (a copy of the sealed model, or its header in a .json file) when IN's own "
        "copies were lost or edited; it is authenticated with the key as usual",
    )


def _expect_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expect-seal",
        metavar="ID",
        action=_Once,
        help="the seal id the model must carry (seal printed it): another seal of it, such as an older sealed "
        "version put back, is then tampering that cannot be recovered",
    )


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; 2 means "not fully recoverable" here, so use 3."""

    commands: dict[str, _Parser]  # the top-level parser's, by name
    hidden: tuple[str, ...] = ()  # words of the command line holding key text: argparse would quote them

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no prefixes: '--in' must not mean --in-place, nor '--forc' --force
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        # the arguments it quotes are the user's: escaped as every error line is (a file name's `\x1b[2J`, `\r`)
        message = one_line(redact(message, self.hidden))
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageExit(f"{self.prog}: {message}")

    def _print_message(self, message: str, file: Any = None) -> None:
        """Help and version text on stdout: a failed write is raised, where argparse dropped it and exited 0.

        `paramseal --help > /dev/full` printed nothing, exit 0; any other output that fails is exit 3.
        """
        if not message or file is None or file is not sys.stdout:
            super()._print_message(message, file)
            return
        sys.stdout.write(message)
        sys.stdout.flush()


class _Once(argparse.Action):
    """An option that takes one value: given again it is refused, where argparse would keep the last silently.

    Two ``--tensors`` read as "check both"; argparse checked only the second and reported it intact.
    So did ``--key a.key --key b.key`` (b alone), and two ``--header-out`` kept the header in the second only.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: str | None = None
    ) -> None:
        old = getattr(ns, self.dest)
        if old is not None:
            if self.dest == "expect_seal":  # a seal id: not quoted, as it is nowhere (see seal_id_shown)
                parser.error(f"{opt} given twice: a model carries one seal")
            if self.dest == "key":  # key text typed as a path is masked, but one line need not risk it
                parser.error(f"{opt} given twice: a model is checked with one key, the one it was sealed with")
            if self.dest == "tensors":
                parser.error(
                    f"{opt} given twice ('{old}', then '{value}'): it takes one glob; to check tensors that no one "
                    "glob matches, run verify once for each"
                )
            parser.error(f"{opt} given twice ('{old}', then '{value}'): it takes one file")
        setattr(ns, self.dest, value)


class UsageExit(SystemExit):
    """Bad usage found by argparse: exit 3, with the message kept for a --json document."""

    def __init__(self, message: str) -> None:
        super().__init__(3)
        self.message = message


def build_parser() -> _Parser:
    ap = _Parser(
        prog="paramseal",
        description="Keyed fragile watermark for model weights: detect, locate and self-recover tampering.",
        epilog="exit codes: 0 intact/recovered, 1 tampered but recoverable, 2 not fully recoverable, "
        "3 usage error, bad file or wrong key; stopped early: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, "
        "141 a reader that left (| head)",
    )
    ap.add_argument("--version", action="version", version=f"paramseal {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("keygen", help="create a new random key file")
    p.add_argument("keyfile", metavar="KEYFILE", help="where to write the key (64 hex digits; keep it secret)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _json_arg(p)

    p = sub.add_parser("seal", help="embed the watermark: IN -> OUT")
    _in_out(p, "the model to seal (a file, or a sharded checkpoint folder)", "where to write the sealed model")
    _key_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--level", choices=LEVELS, default="standard", help="protection level (default: standard)")
    ranges = ", ".join(f"1-{f.mantissa - 1} at {f.name.lower()}" for f in FLOATS.values())
    g.add_argument("--bits", type=int, metavar="K", help=f"low bits per float value instead of a level: {ranges}")
    p.add_argument("--in-place", action="store_true", help="allow OUT to be the IN file")
    _json_arg(p)
    p.add_argument(
        "--reseal",
        action="store_true",
        help="seal a model that carries a seal already (after a change you approved): its old seal is replaced",
    )
    p.add_argument(
        "--code",
        choices=("irs", "lanes"),
        help="redundancy code: irs (scattered and contiguous damage; fp32 models) or lanes (contiguous damage; "
        "every dtype); default: irs where it applies",
    )
    p.add_argument(
        "--header-out",
        metavar="FILE.json",
        action=_Once,
        help="also keep the seal header in FILE.json (no key in it), for --header-from: an .npy file, or a .pt saved "
        "again by torch, keeps only a digest of the sealed metadata (its weight ties) in its weights",
    )

    p = sub.add_parser("verify", help="check a sealed model and locate tampering")
    p.add_argument("input", metavar="IN", help="the sealed model (a file, or a sharded checkpoint folder)")
    _key_args(p)
    _json_arg(p)
    p.add_argument(
        "--tensors",
        metavar="PATTERN",
        action=_Once,
        help="check only tensors whose names match this glob (the others are not read); give it once",
    )
    _header_arg(p)
    _expect_arg(p)

    p = sub.add_parser("recover", help="restore a tampered model bit-exactly: IN -> OUT")
    _in_out(
        p, "the tampered sealed model (a file, or a sharded checkpoint folder)", "where to write the recovered model"
    )
    _key_args(p)
    _json_arg(p)
    p.add_argument("--allow-partial", action="store_true", help="write OUT even if not everything is recovered")
    _header_arg(p)
    _expect_arg(p)
    p.add_argument(
        "--in-place",
        action="store_true",
        help="allow OUT to be the IN file; a safetensors file whose header needs no change gets only its "
        "rebuilt blocks written",
    )

    p = sub.add_parser("inspect", help="show seal settings, perturbation bounds and recovery capacity")
    p.add_argument("input", metavar="IN", help="a model, sealed or not (a file, or a sharded checkpoint folder)")
    p.add_argument(
        "--list", action="store_true", help="also list each tensor: name, dtype, shape, values and watermark bits"
    )
    _json_arg(p)

    p = sub.add_parser("demo", help="offline demo on a small real model: seal, attack, verify, recover")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the training and the attacks (default 0)")
    p.add_argument("--keep", metavar="DIR", help="keep the demo files in DIR")
    _cli_eval.add_parsers(sub)
    ap.commands = sub.choices
    return ap


# path arguments by dest: an empty one ('verify "$MODEL"', MODEL unset) would name the current folder
_PATHS = {
    "input": "IN",
    "output": "OUT",
    "keyfile": "KEYFILE",
    "key": "--key",
    "header_from": "--header-from",
    "header_out": "--header-out",
    "keep": "--keep",
    "out": "--out",
    "docs": "--docs",
}


def seal_id_shown(hidden: tuple[str, ...], given: str | None) -> tuple[str, ...]:
    """``hidden`` less a well-formed ``--expect-seal`` id: half a key's digits, but ``seal_id`` when it matches.

    Only the model's own id is ever printed (the one given is not quoted), so nothing else of it shows.
    """
    if given is None or not SEAL_ID.fullmatch(given.strip().lower()):
        return hidden
    return tuple(h for h in hidden if h.strip().lower() != given.strip().lower())


def no_empty_paths(p: _Parser, args: argparse.Namespace) -> None:
    """Refuse an empty path: it reads as '.', and a sealed sharded folder there would verify as IN.

    Also a name longer than the system allows: every look at it (is it a folder?) raises ENAMETOOLONG.
    """
    for dest, name in _PATHS.items():
        value = getattr(args, dest, None)
        if value == "":
            p.error(f"{name} is empty (an unset shell variable?); give a path")
        _no_dash_key(p, dest, value)
        if isinstance(value, str):
            try:
                os.stat(value)
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:
                    p.error(f"{name} holds a name longer than this system allows; give a shorter path")


def _no_dash_key(p: _Parser, dest: str, value: object) -> None:
    """'-' is no stream here: `--key -` was told to run 'keygen -', which writes a key file named '-'."""
    if value != "-":
        return
    if dest == "keyfile":
        p.error("KEYFILE '-' would be a file named '-' (a key is never printed); give a file path, './-' for that name")
    if dest == "key" and not os.path.exists(value):
        p.error("--key '-' is a file name, and no such file exists; to read the key from a pipe, pass --key /dev/stdin")
