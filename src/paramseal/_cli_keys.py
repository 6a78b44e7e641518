"""The key on the command line: ``paramseal keygen``, and ``--key`` loaded with warnings on who else may change it.

Separate from _cli_commands.py, which runs the commands on models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._cli_streams import quoted, warn
from .keys import Key, exposed_to_others, exposure, folder_open_to_others, load_key, write_key


def keygen(args: argparse.Namespace) -> int:
    key = Key.generate()
    existed = Path(args.keyfile).exists()  # --force replaced it: models sealed with the old key no longer check
    write_key(args.keyfile, key, overwrite=args.force)
    if args.json:  # the fingerprint, for a script to record which key sealed what; the key is only in the file
        status = "replaced" if existed else "created"
        doc = {"kind": "keygen", "status": status, "keyfile": args.keyfile, "key_fingerprint": key.fingerprint}
        print(json.dumps(doc, indent=2))
    else:
        did = "replaced the key in" if existed else "wrote key"
        print(f"OK: {did} {quoted(args, args.keyfile)} (fingerprint {key.fingerprint}); keep it secret")
    _warn_folder(args, args.keyfile)
    return 0


def key_given(args: argparse.Namespace) -> Key:
    """The key of ``--key`` (or PARAMSEAL_KEY), with a warning where other users may read or replace its file."""
    path = args.key
    key = load_key(path)
    args.loaded_key = key  # masked in an internal error's traceback: a key FILE's digits are in no argument
    if path is not None and (mode := exposed_to_others(Path(path))) is not None:
        warn(args, f"key file '{path}' is {exposure(mode)} by other users (mode {mode:o}); run 'chmod 600 {path}'")
    if path is not None:
        _warn_folder(args, path)
    return key


def _warn_folder(args: argparse.Namespace, path: str) -> None:
    """Warn where other users may write the key file's folder: they could rename a key of theirs over it."""
    if (open_to := folder_open_to_others(Path(path))) is not None:
        folder, mode = open_to
        warn(
            args,
            f"key file '{path}' is in folder '{folder}', which other users can write (mode {mode:o}): they could "
            f"replace the key; run 'chmod go-w {folder}'",
        )
