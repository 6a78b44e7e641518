"""Reading and writing one model file, shared by sealing, verifying and recovering it (`files`, `_recover_file`).

Separate so that `files` and `_recover_file` both build on it without importing each other.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._paths import atomic_path, require_file
from .errors import ParamSealWarning
from .formats import GRAPH_KEY, Loaded, adapter_for
from .formats import safetensors as st_format
from .formats.pytorch import META_ENTRY
from .header import Header

PathLike = str | os.PathLike[str]


def read_model(path: PathLike, fmt: str | None = None) -> Loaded:
    """Read a model file with the adapter for its format."""
    p = Path(path)
    require_file(p)
    return adapter_for(p, fmt).read(p)


def write_model(path: PathLike, loaded: Loaded, fmt: str | None = None) -> None:
    """Write a model file atomically."""
    p = Path(path)
    adapter = adapter_for(p, fmt, must_exist=False)
    with atomic_path(p) as tmp:
        adapter.write(tmp, loaded)


def is_safetensors(path: Path, *, output: bool = False) -> bool:
    return adapter_for(path, must_exist=not output).name == "safetensors"


@contextmanager
def open_model(path: Path) -> Iterator[Loaded]:
    """The model in ``path``: safetensors are mapped (pages read on use), other formats loaded."""
    require_file(path)
    if not is_safetensors(path):
        yield read_model(path)
        return
    m, tensors, meta = st_format.map_tensors(path)
    try:
        yield Loaded(tensors, meta)
    finally:
        m.close()


def warn_pt_entry(out: Path, h: Header, header_kept: bool, verb: str = "seal") -> None:
    """Warn where a sealed .pt verifies only while it keeps its _metadata entry, which a re-save drops.

    ``torch.save(model.state_dict())`` writes no '.paramseal' entry: the file then has the header only if
    its weights hold a copy, and a sealed ONNX graph digest nowhere (verify calls that tampering).
    ``header_kept``: the header is kept in a file too (seal --header-out, recover --header-from). ``verb``:
    the command that wrote ``out``, whose other output formats the advice names.
    """
    resaved = "which torch.save(model.state_dict()) does not write back (torch.save(torch.load(f)) does)"
    if not h.carriers and not header_kept:
        warnings.warn(
            f"'{out}' keeps its seal header only in its state dict's _metadata entry '{META_ENTRY}' (the "
            f"weights have no room for a copy), {resaved}: a file saved so verifies only with --header-from; keep "
            f"the header with seal --header-out, or {verb} to .safetensors",
            ParamSealWarning,
            stacklevel=3,  # the caller of seal_file
        )
    if GRAPH_KEY in (h.user_metadata or {}):
        warnings.warn(
            f"'{out}' keeps the sealed digest of its ONNX model's graph only in its state dict's _metadata "
            f"entry '{META_ENTRY}', {resaved}: a file saved so fails verify (exit 2); keep the file as written",
            ParamSealWarning,
            stacklevel=3,
        )
