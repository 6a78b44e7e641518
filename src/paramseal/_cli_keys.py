"""The key on the command line: ``paramseal keygen``, and ``--key`` loaded with warnings on who else may change it.

Separate from _cli_commands.py, which runs the commands on models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._cli_streams import quoted, warn
from ._key_trust import key_file_warnings
from .keys import Key, load_key, write_key


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
    for line in key_file_warnings(args.keyfile):  # its folders: a key of 600 is no safer where others swap it
        warn(args, line)
    return 0


def key_given(args: argparse.Namespace) -> Key:
    """The key of ``--key`` (or PARAMSEAL_KEY), with a warning where other users may read or replace its file.

    Warned, not refused, as a key file others may read always was: the key is used (see _key_trust).
    """
    path = args.key
    key = load_key(path)
    args.loaded_key = key  # masked in an internal error's traceback: a key FILE's digits are in no argument
    if path is not None:
        for line in key_file_warnings(path):
            warn(args, line)
    return key
