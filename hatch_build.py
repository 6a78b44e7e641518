"""Hatch build hook: compile the optional C kernels (src/paramseal/_native.c) into the package.

Without a C compiler the build goes on and ParamSeal uses its numba kernels (slower seal);
``PARAMSEAL_NATIVE=require`` at run time turns that into an error, which CI uses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SRC = Path("src/paramseal/_native.c")
LIB = Path("src/paramseal/_psnative.so")


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Builds ``_psnative.so`` for wheels and editable installs alike."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile the library; on failure, warn and build a wheel without it.

        A library from an earlier build is removed first, so a failed build never leaves a stale
        one in use; the library also carries a hash of its source, which `_native` checks.
        """
        root = Path(self.root)
        src, lib = root / SRC, root / LIB
        lib.unlink(missing_ok=True)
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
        cmd = [*cc.split(), "-O2", "-shared", "-fPIC", f'-DPS_SRC_HASH="{digest}"', "-o", str(tmp), str(src)]
        if shutil.which(cmd[0]) is None:
            print(f"paramseal: no C compiler ({cmd[0]}); the compiled kernels are left out", file=sys.stderr)
            return
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            tmp.unlink(missing_ok=True)
            print(f"paramseal: building the compiled kernels failed, left out:\n{e.stderr}", file=sys.stderr)
            return
        os.replace(tmp, lib)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].append(str(LIB))
