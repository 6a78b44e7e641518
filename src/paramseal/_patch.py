"""Writing a recovered safetensors model: where it can, only the rebuilt blocks.

In place, or into a copy of the input made while verify runs (`Precopy`), the rebuilt blocks are
written with ``pwrite``; otherwise the sealed tensors are streamed into a new file. Also the
refusals that keep a recovered output from losing what the input holds.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from . import _json
from ._bits import uint_view
from ._file_attrs import open_sole
from ._findings import NOT_NARROWED, metadata_findings, usable
from ._layout import TensorSpec
from ._pages import chunks, copy_range, pwrite_all, read, release
from ._parallel import task_map
from ._paths import atomic_path
from ._sealing import write_blocks
from ._tempname import discard
from .errors import UsageError, cannot_write
from .formats import Loaded, adapter_for
from .formats import safetensors as st_format
from .header import METADATA_KEY
from .levels import BLOCK
from .recover import Patch, Recovery
from .report import Report
from .verify import Check


class Precopy(threading.Thread):
    """Copies the input file to the output's temporary file, and writes it to disk, while verify runs.

    Recovery usually rewrites a few blocks: with the copy already made, the output costs
    a header and those blocks. The copy is only used if the output's layout matches.
    """

    _STEP = 256 << 20  # bytes per copy call: a stop request waits for at most one

    def __init__(self, src: Path, tmp: Path) -> None:
        super().__init__(name="paramseal-precopy", daemon=True)
        self.src, self.tmp, self.ok = src, tmp, False
        self._halt = threading.Event()
        self._taken = False

    def run(self) -> None:
        try:
            with open(self.src, "rb") as fi, open(self.tmp, "r+b") as fo:
                n = os.fstat(fi.fileno()).st_size
                for off in range(0, n, self._STEP):
                    if self._halt.is_set() or not copy_range(
                        fi.fileno(), off, fo.fileno(), off, min(self._STEP, n - off)
                    ):
                        return
                os.fsync(fo.fileno())
                self.ok = True
        except OSError:
            self.ok = False

    def take(self) -> Path:
        """The finished copy's path, the caller's from now on: `cancel` leaves it be."""
        self._taken = True
        return self.tmp

    def cancel(self) -> None:
        """Stop copying and delete the temporary file (and its private folder), unless it was taken.

        Deleted even when the wait is cut short (a second Ctrl-C while a step of the copy ends):
        the thread, told to stop, writes on into a file that no longer has a name.
        """
        self._halt.set()
        try:
            if self.ident is not None:  # started
                self.join()
        finally:
            if not self._taken:
                self._taken = True  # once: its path (through a descriptor) may name another folder by a next call
                discard(self.tmp)


def refuse_unverifiable_metadata(chk: Check, out_meta: dict[str, str], dst: Path, fmt: str) -> None:
    """An output presented as recovered must verify: refuse one whose metadata verify would call stripped.

    A model sealed with user metadata into a file that keeps none (.npy, a .pt saved again by torch) keeps
    only its digest in the weights' header; written to a format that keeps metadata (.npz, .safetensors),
    the output would lack what was sealed, and verify would call it tampered.
    """
    user = {k: v for k, v in out_meta.items() if k != METADATA_KEY}
    writer = adapter_for(dst, fmt, must_exist=False)
    # a format that writes some entries in its own terms (a .pt's ties) holds metadata only when given more
    held = writer.keeps_metadata and (not writer.carried_metadata or bool(set(out_meta) - writer.carried_metadata))
    issues, _ = metadata_findings(chk.header, user, held)
    if issues:
        raise UsageError(
            f"the model was sealed with user metadata that this file does not hold (only its digest is in the seal "
            f"header): a {fmt} output, which keeps metadata, would lack it and never verify; nothing was written. "
            "Recover to the input's own format, or pass --header-from a kept copy of the sealed model that holds "
            "it (the file seal wrote, or seal --header-out's .json)"
        )


def refuse_losing_partial(src: Path, loaded: Loaded, chk: Check, report: Report) -> None:
    """A partial result written over IN must not lose what IN holds that the output will not.

    The output has the sealed tensors only: a tensor IN holds at another size (read as missing)
    that stays unrecoverable is written as zeros, one widened after sealing whose values its sealed
    dtype cannot all hold is written rounded, and a tensor the seal does not know, or a
    checkpoint's other entries (a .pt's optimizer state), are left out. Over a new file IN keeps
    them; in place they would be gone.
    """
    tensors = loaded.tensors
    lost = [
        s.name
        for s in chk.specs
        if s.name in tensors
        and (f := report.tensors.get(s.name)) is not None
        and f.unrecoverable_blocks
        # read narrowed back from a wider dtype, values it held that the sealed one cannot would be rounded
        and (usable(tensors[s.name], s)[0] is None or any(NOT_NARROWED in i for i in f.issues))
    ]
    lost += chk.extra + list(loaded.others)
    if lost:
        shown = ", ".join(f"'{n}'" for n in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise UsageError(
            f"recover --in-place --allow-partial would lose what '{src}' holds in {shown} (not restored, and "
            "its data is not the sealed tensor's size, or holds values its sealed dtype cannot, or the seal does not "
            "know it, or it is not a tensor the output keeps); nothing was written: "
            "recover into a new file, which leaves the input as it is"
        )


_HEADER_SLACK = 64 << 10  # input header room beyond the output's own that a patched copy may keep


def _sealed_room(chk: Check, meta: dict[str, str]) -> int:
    """The safetensors header length the sealed file had, when its header records it and it fits ``meta``.

    0 when unknown (a seal made in memory, or before the length was recorded) or when the output's
    header could not fit it: then the writers keep their own room.
    """
    room = chk.header.st_room
    if not room or METADATA_KEY not in meta:
        return 0
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    need = st_format.header_room(entries, meta)
    # no more room than a patched copy may keep: a recorded length far beyond the header is no
    # seal's (a key holder's forgery would otherwise size the output, up to petabytes)
    return room if need <= room <= need + _HEADER_SLACK and room % 8 == 0 else 0


def patch_copy(tmp: Path, src: Path, chk: Check, rec: Recovery, meta: dict[str, str], dst: Path) -> bool:
    """Turn ``tmp``, a copy of the input, into the recovered file ``dst``: new header, rebuilt blocks.

    Possible when the recovered tensors have the input's names, dtypes, shapes and order and the
    new header fits the input's header room; returns False (``tmp`` untouched) otherwise. Written
    with ``pwrite``: where the copy shares the input's blocks (a reflink on XFS or btrfs) a write
    needs new space, and a full disk is then an error (exit 3), not a SIGBUS through a mapping.
    """
    lay = _same_tensors(src, chk)  # swapped or renamed data: the copy holds it in the wrong places
    if lay is None:
        return False
    head = st_format.header_json(lay.entries, meta)
    room = lay.data_start - 8
    if len(head) > room or not _room_kept(room, chk, meta):
        return False
    _write_patches(
        tmp, lay, chk, rec, lambda fd: pwrite_all(fd, struct.pack("<Q", room) + head.ljust(room, b" "), 0), dst
    )
    return True


def patch_in_place(path: Path, chk: Check, rec: Recovery, meta: dict[str, str]) -> bool:
    """``--in-place``: write only the rebuilt blocks into the file itself, then flush it to disk.

    Only for a plain writable file (not a link: a link's other names would change too) whose
    header can stay byte for byte: the same tensors and metadata, in the compact JSON this
    library writes (no duplicate keys, no junk), tensors back to back, and no more header room
    than a fresh output would keep. Anything else takes the atomic path (False, nothing
    written): a header rewritten in place could be torn by a crash. Each rebuilt block restores
    sealed content, so an interrupted patch leaves a sealed model with fewer tampered blocks,
    which verify names and recover finishes. Blocks go out with ``pwrite``, so a full disk is
    an error, not a SIGBUS.
    """
    if path.is_symlink() or os.stat(path).st_nlink != 1 or not os.access(path, os.W_OK):
        return False
    lay = _same_tensors(path, chk)
    if lay is None:
        return False
    spans = sorted((e.start, e.end) for e in lay.entries)
    size = os.path.getsize(path) - lay.data_start
    if any(a != b for (_, b), (a, _) in zip([(0, 0), *spans], [*spans, (size, size)], strict=True)):
        return False  # a gap between tensors (or after them) would be kept
    with open(path, "rb") as f:
        raw = f.read(lay.data_start)[8:]
    if not _room_kept(lay.data_start - 8, chk, meta):
        return False
    body = raw.rstrip(b" ")
    try:  # the same JSON object in the same compact form (key order aside: the input's is kept)
        cur = _json.loads(body)
        if json.dumps(cur, separators=(",", ":")).encode() != body:
            return False
        if cur != json.loads(st_format.header_json(lay.entries, meta)):
            return False
    except (ValueError, UnicodeDecodeError):
        return False
    if rec.patches:  # on an error, the blocks written so far restore sealed content: verify and recover go on
        _write_patches(path, lay, chk, rec, os.fsync, path)
    return True


def _same_tensors(path: Path, chk: Check) -> st_format.Layout | None:
    """The layout of safetensors file ``path`` if it holds the sealed tensors in place: names, dtypes, shapes, order."""
    if chk.moved:
        return None
    lay = st_format.read_layout(path)
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    return lay if [(e.name, e.dtype, e.shape) for e in lay.entries] == entries else None


def _room_kept(room: int, chk: Check, meta: dict[str, str]) -> bool:
    """Whether an output may keep the input's header room ``room``.

    Not a bloated one (say by junk metadata an attacker added): the output would keep it as
    padding. Where the seal recorded its room, only that one: the output is then the sealed file
    byte for byte.
    """
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    return room <= st_format.header_room(entries, meta) + _HEADER_SLACK and _sealed_room(chk, meta) in (0, room)


def _write_patches(
    path: Path, lay: st_format.Layout, chk: Check, rec: Recovery, last: Callable[[int], object], dst: Path
) -> None:
    """Write every rebuilt block into ``path`` (laid out as ``lay``), then ``last(fd)``; a failure names ``dst``."""
    try:
        fd = _open_plain(path)
        try:

            def one(t: int) -> None:
                _pwrite_patch(fd, lay.data_start + lay.entries[t].start, chk.specs[t], rec.patches[t])

            task_map(one, list(rec.patches))  # tensors side by side (apart in the file): heavy damage writes half
            last(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise cannot_write(dst, e) from e


def _open_plain(path: Path) -> int:
    """``path`` opened for writing where it is still one plain file (`patch_in_place` checked it by name)."""
    if (fd := open_sole(path, os.O_RDWR)) is None:
        raise OSError(
            errno.EEXIST, "it became a link or another file's name while it was recovered; nothing was written"
        )
    return fd


_WINDOW = 1 << 16  # blocks per window (16 MiB of fp32)


_GAP = 64 << 10  # bytes between two runs of a window past which they go out apart


def _pwrite_patch(fd: int, at: int, spec: TensorSpec, patch: Patch) -> None:
    """Write a patch's rebuilt blocks at byte ``at`` (the tensor's start) of a file open for reading and writing.

    The runs of blocks of a window that lie less than `_GAP` apart go out as one call, the
    blocks between read back from the file itself (with pread: through a mapping its pages
    would count against the process). One call per run was a Python loop per block under
    scattered damage: 74,000 calls at 1% of a 256 MiB model (its recover 11.3 s, against 9.6 s
    with them joined). Runs far apart
    still go out apart: a few spread over a large tensor would otherwise rewrite all of it.
    """
    item = patch.new.dtype.itemsize
    rows = patch.rows
    near = np.diff(rows) <= max(1, _GAP // (BLOCK * item)) + 1
    cuts = np.flatnonzero(~near | (np.diff(rows // _WINDOW) != 0)) + 1
    for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, rows.size].tolist(), strict=True):
        r0, r1 = int(rows[a]), int(rows[b - 1]) + 1
        n0, n1 = r0 * BLOCK, min(r1 * BLOCK, spec.numel)
        if n1 <= n0:
            continue
        new = patch.new[a:b]
        if r1 - r0 != b - a:  # runs with blocks between them: read those, then write the span
            span = np.zeros((r1 - r0, new.shape[1]), new.dtype)
            _pread_into(fd, span.reshape(-1)[: n1 - n0].view(np.uint8).data, at + n0 * item)
            span[rows[a:b] - r0] = new
            new = span
        pwrite_all(fd, np.ascontiguousarray(new).reshape(-1)[: n1 - n0].view(np.uint8).data, at + n0 * item)
        release(patch.new[a:b])  # rebuilt blocks in a scratch file: let the pages written go


def _pread_into(fd: int, buf: memoryview, at: int) -> None:
    done = 0
    while done < len(buf):  # pread may read less than asked
        n = os.preadv(fd, [buf[done:]], at + done)
        if n == 0:
            raise OSError(errno.EIO, "the file ended before the blocks to patch")
        done += n


def write_recovered(dst: Path, chk: Check, rec: Recovery, meta: dict[str, str]) -> None:
    """Write the recovered model (the sealed tensors, patched) into a safetensors file.

    A tensor still mapped from the input is copied in the kernel and then only its rebuilt
    blocks are written: recovering a lightly tampered model costs little more than verifying it.
    """
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    with atomic_path(dst) as tmp:
        w = st_format.StreamWriter(tmp, entries, _sealed_room(chk, meta) or st_format.header_room(entries, meta))
        try:
            for t, (spec, ub) in enumerate(zip(chk.specs, chk.blocks, strict=True)):
                out = uint_view(w.array(spec.name))
                patch = rec.patches.get(t)
                if w.copy_in(spec.name, ub.reshape(-1)[: spec.numel]):
                    if patch is not None:
                        _write_patch(out, spec, patch)
                    continue
                for r0, r1 in chunks(spec.nblocks, ub.dtype.itemsize, 0, 1):
                    part = read(ub[r0:r1])  # an input's blocks with pread: a file cut short is an error, not SIGBUS
                    part = part.copy() if np.may_share_memory(part, ub) else part
                    if patch is not None:  # its rows are sorted
                        i0, i1 = np.searchsorted(patch.rows, [r0, r1])
                        part[patch.rows[i0:i1] - r0] = patch.new[i0:i1]
                        release(patch.new[i0:i1])
                    write_blocks(out, spec, r0, part)
            w.finish(meta)
        except BaseException:
            w.abort()
            raise


def _write_patch(out: NDArray[np.unsignedinteger], spec: TensorSpec, patch: Patch) -> None:
    """Write a patch's rebuilt blocks into a tensor's flat values (the last block's padding dropped).

    A chunk of blocks at a time, so the index temporaries stay small.
    """
    for r0, r1 in chunks(patch.rows.size, patch.new.dtype.itemsize, 0, 1):
        idx = (patch.rows[r0:r1, None] * BLOCK + np.arange(BLOCK)).reshape(-1)
        keep = idx < spec.numel
        out[idx[keep]] = patch.new[r0:r1].reshape(-1)[keep]
        written = idx[keep]
        release(out[int(written.min()) : int(written.max()) + 1], patch.new[r0:r1])
