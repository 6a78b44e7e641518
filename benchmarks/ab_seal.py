#!/usr/bin/env python3
"""Two source trees' file-to-file seal, A against B, alternated in fresh processes.

Usage::

    python benchmarks/ab_seal.py --base OTHER/src [--size-gib 1.0] [--rounds 8] [--level standard] [--dir SCRATCH]

B is this checkout's ``src``; A is ``--base`` (another clone's ``src`` with its compiled library
built). Writes ``bench_core.py``'s LLaMA-shaped fp32 checkpoint once, then seals it with
``files.seal_file`` (at ``--level``) in a fresh interpreter per run, A then B, ``--rounds`` times, each run after
its previous output is removed and the disk flushed. Prints each run's seconds of the call and
the process's user and system CPU seconds, their medians, and the paired differences B - A. A
change of a few percent is below what one run shows on a shared machine (runs of one tree spread
by 15% or more here): read the medians and the paired differences, not a single pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402

_WORKER = """
import json, resource, sys, time
from paramseal import files, load_key
key = load_key(None)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
files.seal_file(sys.argv[1], sys.argv[2], key, level=sys.argv[3], progress=False)
t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": t, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}))
"""


def run(src: str, model: Path, out: Path, level: str, env: dict[str, str]) -> dict[str, float]:
    out.unlink(missing_ok=True)
    os.sync()
    got = subprocess.run(
        [sys.executable, "-c", _WORKER, str(model), str(out), level],
        env={**env, "PYTHONPATH": src}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(got.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other tree's src folder (A)")
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--level", default="standard", choices=("standard", "strong"))
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    a = ap.parse_args()
    trees = {"A": str(Path(a.base).resolve()), "B": str(Path(__file__).resolve().parents[1] / "src")}
    work = a.dir or Path(tempfile.mkdtemp(prefix="ab_seal_"))
    work.mkdir(parents=True, exist_ok=True)
    model, out = work / f"f32_{a.size_gib:g}.safetensors", work / "sealed.safetensors"
    if not model.exists():
        bench_core.write_checkpoint(model, a.size_gib)
    env = {**os.environ, "PARAMSEAL_KEY": "5ea1" * 16}
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for i in range(a.rounds):
        for name in ("A", "B"):
            r = run(trees[name], model, out, a.level, env)
            runs[name].append(r)
            print(f"round {i + 1} {name}: {r['s']:.2f} s, user {r['user']:.2f} s, sys {r['sys']:.2f} s", flush=True)
    out.unlink(missing_ok=True)
    for name in ("A", "B"):
        rs = runs[name]
        med = {k: statistics.median(r[k] for r in rs) for k in ("s", "user", "sys")}
        print(f"{name} ({trees[name]}): median {med['s']:.2f} s, user {med['user']:.2f} s, sys {med['sys']:.2f} s")
    diff = sorted(b["s"] - x["s"] for x, b in zip(runs["A"], runs["B"], strict=True))
    print(f"B - A, paired by round: median {statistics.median(diff):+.3f} s, each {[round(d, 2) for d in diff]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
