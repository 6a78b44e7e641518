"""The ``paramseal keygen`` command: write a new key file, print its fingerprint (never the key).

Separate from _cli_commands.py, which runs the commands on models.
"""

from __future__ import annotations

import argparse
import json

from ._cli_streams import quoted
from .keys import Key, write_key


def keygen(args: argparse.Namespace) -> int:
    key = Key.generate()
    write_key(args.keyfile, key, overwrite=args.force)
    if args.json:  # the fingerprint, for a script to record which key sealed what; the key is only in the file
        doc = {"kind": "keygen", "status": "created", "keyfile": args.keyfile, "key_fingerprint": key.fingerprint}
        print(json.dumps(doc, indent=2))
    else:
        print(f"OK: wrote key {quoted(args, args.keyfile)} (fingerprint {key.fingerprint}); keep it secret")
    return 0
