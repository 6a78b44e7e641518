"""The seal's passes over flat tensor views: gather, encode, embed and tag, chunk by chunk.

`seal_flat` seals tensors given as flat unsigned views (arrays in memory, or memory-mapped files
from `files.seal_file`) with the lane code or the irs4 code, then writes the header into its
carriers; `read_blocks` and `write_blocks` move whole blocks in and out of those views.
Kept apart from `seal`, which holds the public API (`SealConfig`, `seal`, the checks of its arguments).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from . import _code, _embed, _irs, _model, _native, _native_blocks, _pages, _rs16, _seal_tags, _strata
from ._bits import write_tags
from ._layout import TensorSpec, build_layout
from ._mac import BlockMac
from ._pages import (
    SCATTERED_BLOCKS,
    Workspace,
    chunks,
    file_span,
    is_mapped,
    pwrite_all,
    read_ahead,
    release,
    write_behind,
)
from ._parallel import in_turn, task_map
from ._progress import Progress
from .errors import InputError, NonFiniteError, UnsupportedError
from .header import SCHEME_IRS, Header, max_header_chars
from .keys import Key, require_key
from .levels import BLOCK, FLOATS

WINDOW_BYTES = 64 << 20  # stripes gathered in memory before a lane store on disk is written
ST_ROOM_LIMIT = 10**15  # recorded safetensors header lengths stay below it: the probe header sizes their digits


def seal_flat(
    flats: list[NDArray[np.unsignedinteger]],
    outs: list[NDArray[np.unsignedinteger]],
    specs: list[TensorSpec],
    key: Key,
    salt: bytes,
    level: str,
    bits: int | None,
    lanes: int | None,
    meta: dict[str, str],
    ws: Workspace,
    progress: Progress | None = None,
    code: str | None = None,
    st_room: int = 0,
) -> Header:
    """Seal tensors given as flat unsigned views (``flats``) into ``outs``, chunk by chunk.

    Inputs and outputs may be memory-mapped files: every pass works on chunks of
    about ``CHUNK_BYTES`` and releases their pages, and the lane store lives in
    ``ws`` (temporary files for large models), so memory stays bounded.

    1. gather: every chunk's data bits go to the lane store (NaN/Inf are refused here);
    2. encode: Reed–Solomon parity per batch of lanes;
    3. embed: every chunk gets its parity, records and tags, and is written out;
    4. the header is built and copied into the carriers' reserved blocks.

    ``st_room``: the safetensors header length of the file ``outs`` lie in, recorded in the header.
    """
    require_key(key)
    irs = use_irs(specs, code, lanes)
    probe, slack = probe_header(specs, level, bits, salt, key, meta, irs, bool(st_room))
    emb = _embed.plan(specs, len(probe.to_json(key, embedded=True)) + slack)  # the embedded copy's bound
    specs = emb.specs
    if irs:
        return _seal_irs(flats, outs, specs, key, salt, level, bits, meta, emb, progress, st_room)
    layout = build_layout(specs, key, salt, lanes)
    prog = progress or Progress.null()
    g = layout.lanes
    store = ws.lanes_array(layout.K, g)
    far = is_mapped(store)
    # a store on disk is filled through a window of whole stripes in memory (see StripeWindow)
    window = _model.StripeWindow(store, layout, max(g, _pages.CHUNK_BYTES // 64), WINDOW_BYTES) if far else None

    def parts_of(t: int, cap: int) -> list[tuple[int, int]]:
        return chunks(specs[t].nblocks, flats[t].dtype.itemsize, int(layout.block_start[t]), g, scattered=cap)

    read_cap = SCATTERED_BLOCKS if far else 0  # embed reads parity from the store

    def read(job: tuple[int, int, int]) -> _model.Blocks:
        return read_blocks(flats[job[0]], specs[job[0]], job[1], job[2])

    def gather(job: tuple[int, int, int]) -> None:  # chunks are disjoint blocks: their cells of the store too
        t, r0, _ = job
        if r0 == 0:
            prog.step(f"read {specs[t].name}")
        ub = read(job)
        _refuse_non_finite(ub, specs[t])
        _model.gather_chunk(store, layout, t, specs[t], ub, r0)

    # Chunks side by side, one per core (`task_map`): one's reads and writes overlap another's
    # kernels. The lane code's kernels are safe there (numba's parallel ones are never entered
    # in a task). A store on disk is filled through the window, which takes blocks in order.
    jobs = [(t, r0, r1) for t in range(len(specs)) for r0, r1 in parts_of(t, 0)]
    if window is None:
        layout.perm_rows(0, 1)  # the cached permutations (a model that fits) made once, before the tasks share them
        task_map(gather, jobs)
    else:
        for (t, r0, _), ub in read_ahead(read, jobs):  # the next chunk is read while this one is worked on
            if r0 == 0:
                prog.step(f"read {specs[t].name}")
            _refuse_non_finite(ub, specs[t])
            window.gather(t, specs[t], ub, r0)
        window.finish()
    prog.step("encode")
    release(store)
    # Parity is read back in file order (embed), so on disk it is kept shard-major: a chunk reads
    # a few contiguous rows instead of one page per block.
    parity = ws.lanes_array(layout.M, g, lane_major=False)
    _code.encode_into(store, parity)
    # The data is coded: its store (most of the model's size) goes now, so that the embed pass's output
    # pages reuse its memory: fresh pages beside it cost a 1 GiB bf16 seal about twice the system time.
    store, window = np.zeros(0, np.uint32), None
    mac = BlockMac(key)

    @functools.lru_cache(maxsize=8)  # the tensors being embedded (a few at a time: memory stays bounded)
    def of(t: int) -> tuple[NDArray[np.bool_], bytes]:
        b0, spec = int(layout.block_start[t]), specs[t]
        plain = _embed.reserved_content(spec, t, len(specs), salt, None) if spec.reserved else b""
        return layout.tag_internal[b0 : b0 + spec.nblocks], plain

    def embed(job: tuple[int, int, int]) -> NDArray[np.uint64]:  # chunks are disjoint blocks: any order
        t, r0, r1 = job
        spec, b0 = specs[t], int(layout.block_start[t])
        if r0 == 0:
            prog.step(f"embed {spec.name}")
        internal, plain = of(t)
        ub = read(job)
        _model.write_storage(layout, spec, t, ub, parity, r0=r0)
        tags = _tag_chunk(ub, t, spec, r0, internal, plain, t not in emb.carriers, mac, salt)
        write_blocks(outs[t], spec, r0, ub)
        # final but for the carriers' few reserved blocks: the disk can start on it while the others are embedded
        write_behind(outs[t][r0 * BLOCK : r1 * BLOCK])
        lo, hi = layout.stripe_store[(b0 + r0) // g], layout.stripe_store[(b0 + r1 - 1) // g]
        release(parity[lo : hi + 2 * spec.k])  # the rows this chunk read
        return tags

    jobs = [(t, r0, r1) for t in range(len(specs)) for r0, r1 in parts_of(t, read_cap)]
    ext: dict[int, list[NDArray[np.uint64]]] = {}
    for (t, _, _), tags in zip(jobs, task_map(embed, jobs), strict=True):
        if tags.size:  # the header's tags: blocks without room for their own
            ext.setdefault(t, []).append(tags)
    external = {t: np.concatenate(e) for t, e in ext.items()}
    parity = np.zeros(0, np.uint32)  # let the workspace go
    header = Header(
        level=level,
        bits=bits,
        salt=salt,
        key_fingerprint=key.fingerprint,
        lanes=layout.lanes,
        tensors=tuple(specs),
        external_tags=external,
        user_metadata=meta,
        carriers=emb.carriers,
        copies=emb.copies,
        st_room=st_room,
    )
    _write_carriers(outs, header, key, mac)
    return header


def _tag_chunk(
    ub: _model.Blocks,
    t: int,
    spec: TensorSpec,
    r0: int,
    internal: NDArray[np.bool_],
    plain: bytes,
    record: bool,
    mac: BlockMac,
    salt: bytes,
) -> NDArray[np.uint64]:
    """Finish blocks ``[r0, r0 + len(ub))`` of tensor ``t`` in place; return the tags kept in the header.

    First the identity record (``record``; carriers get theirs once the header exists), then the
    tags of the blocks that keep them in their low bits. A block whose tag lives in the header
    keeps its low bits (irs4 parity; zero in the lane code).
    """
    r1 = r0 + ub.shape[0]
    if record and r0 < spec.reserved:
        _embed.write_reserved(ub, spec, plain, np.arange(min(r1, spec.reserved) - r0), r0)
    tags = _model.compute_tags(mac, salt, t, spec, ub, internal, r0=r0)
    inside = internal[r0:r1]
    if spec.is_float and inside.all():  # the usual chunk: no copy of it in and out
        write_tags(ub, tags, spec.k)
    elif spec.is_float and inside.any():
        sub = ub[inside]
        write_tags(sub, tags[inside], spec.k)
        ub[inside] = sub
    return tags[~inside]


def _write_carriers(outs: list[NDArray[np.unsignedinteger]], header: Header, key: Key, mac: BlockMac) -> None:
    """Copy the finished header into the reserved blocks of its carriers, and tag those blocks."""
    specs, salt = header.tensors, header.salt
    copy = header.to_json(key, embedded=True).encode()
    for t in header.carriers:
        spec = specs[t]
        ub = read_blocks(outs[t], spec, 0, spec.reserved)
        rows = np.arange(spec.reserved)
        content = _embed.reserved_content(spec, t, len(specs), salt, copy, header.copies)
        _embed.write_reserved(ub, spec, content, rows)
        tags = _model.compute_tags(mac, salt, t, spec, ub, np.ones(spec.nblocks, np.bool_))
        write_tags(ub, tags, spec.k)
        write_blocks(outs[t], spec, 0, ub)


def _shared_tables(code: _irs.Code, host: bool, groups: int) -> None:
    """Build the tables the superblocks use, before the pass.

    The encoder's map where its calls (of ``groups`` groups at most) use it; with ``host`` (the groups
    hold the outer code's parity), that code's skew tables. Left to the first superblocks, both
    threads built the skew tables at once, or one built the map while the other waited for it
    (docs/performance.md, "A profile at 2b36444").
    """
    built = _native.prepare(code, groups)
    if host and _native.available() and not _rs16.skew_matrices.cache_info().currsize:  # `_rs16.parity` serves
        _rs16.skew_matrices()
        built = True
    if built:  # their temporaries' pages, else resident through the pass
        _pages.trim_heap()


def use_irs(specs: list[TensorSpec], code: str | None, lanes: int | None) -> bool:
    """Whether to seal with the interleaved Reed–Solomon code (see ``SealConfig.code``)."""
    if code == "lanes" or (code is None and lanes is not None):
        return False
    return code == "irs" or _strata.applies(specs)


def _seal_irs(
    flats: list[NDArray[np.unsignedinteger]],
    outs: list[NDArray[np.unsignedinteger]],
    specs: list[TensorSpec],
    key: Key,
    salt: bytes,
    level: str,
    bits: int | None,
    meta: dict[str, str],
    emb: _embed.Plan,
    progress: Progress | None,
    st_room: int = 0,
) -> Header:
    """Seal with the irs4 code: parity per superblock of groups, then the tags the superblocks left.

    Where `_seal_tags.InPass` applies (fp32 blocks, the current MAC, VAES), a block lying whole in one
    staged stratum row is tagged there, before the row is written; the tag pass then does a few blocks a
    tensor (reserved, short, cut where a stratum starts) and the tensors not staged, chunk by chunk.
    Both passes run one item per core, at most four at a time (`task_map`, with the compiled
    kernels). Memory: a superblock's work arrays per thread, kept from one superblock to the next,
    then a tag chunk per thread (`CHUNK_BYTES`), the integer tensors' words and the code
    tables; the model itself is read and written through ``flats`` and ``outs`` (memory maps for files).
    """
    prog = progress or Progress.null()
    carriers = emb.carriers
    st = _strata.plan(specs, key, salt)
    code = st.code
    data = st.pack_data(flats)
    for i in np.flatnonzero(~st.is_float):
        _strata.write_run(outs[int(i)], 0, flats[int(i)])
    outer = st.outer
    mac = BlockMac(key)
    staged = _seal_tags.InPass(st, specs, outs, mac, salt)  # blocks tagged where the strata are staged
    work = [
        (t, r0, r1)
        for t, s in enumerate(specs)
        for r0, r1 in (((0, s.nblocks),) if staged.staged[t] else chunks(s.nblocks, flats[t].dtype.itemsize, 0, 1))
    ]
    prog.expect(outer.superblocks + len(work))

    # each thread's work arrays, kept from one superblock to the next: fresh ones were mapped and
    # zeroed by the kernel every time (about 44 MiB a superblock of a GiB's model)
    scratch = _strata.Scratch()
    # one superblock's writes at a time: the kernel takes the file's lock for each pwrite anyway, and a
    # thread waiting there spun (1.5% of a seal's CPU); waiting here it sleeps (ab_seal: 2.48 against 2.63 s)
    writing = threading.Lock()

    def batch(a: int, b: int) -> int:  # groups an encoder call takes: the superblock where it hosts the outer parity
        return b - a if st.host else _strata.GROUP_BATCH

    def superblock(s: int) -> None:  # with an outer code, a whole superblock: its parity goes into its groups
        prog.step(f"encode {s + 1}/{outer.superblocks}")
        a, b = outer.span(s)
        step = batch(a, b)
        for g0 in range(a, b, step):
            g1 = min(b, g0 + step)
            pad = st.offset(g0, g1, scratch)  # its key, where the kernels make its words as they go
            content = scratch.get("content", (g1 - g0, outer.shard), np.uint8) if st.host else None
            # the code runs on the words plus the keyed offset; the outer code on their content
            w = st.seal_words(flats, data, g0, g1, pad, scratch, content)
            hosted = None
            if content is not None:
                hosted = outer.hosted_bytes(code, outer.parity(content, s), g1 - g0)
            placed = st.encode_placed(w, g0, pad, scratch, hosted)  # parity put, encoded, placed in one pass
            if placed is None:
                if hosted is not None:
                    outer.put_hosted(w, hosted)
                _irs.encode(code, w)
            words = None if placed is not None else pad.array()
            tags, writes = (staged.tag, staged.writes(writing, g0)) if staged.active else (None, writing)
            st.scatter(outs, w, g0, g1, words, scratch, tags, placed, writes)
            if staged.active:
                staged.written(g0, g1)

    # Superblocks are independent (their groups, and so the words they write, are disjoint): one per
    # core at a time, so that one's single-threaded steps (gather, leopard, writes) overlap another's.
    # Only with the compiled encoder: numba's fallback is a parallel kernel, which two threads
    # must not enter (numba's workqueue layer aborts), and it fills the cores itself.
    side_by_side = task_map if _native.encodes(code) else in_turn
    spans = [outer.span(s) for s in range(outer.superblocks)]
    _shared_tables(code, bool(st.host), max((min(b - a, batch(a, b)) for a, b in spans), default=0))

    @functools.lru_cache(maxsize=8)  # the tensors being tagged (a few at a time: memory stays bounded)
    def plain_of(t: int) -> bytes:
        return _embed.reserved_content(specs[t], t, len(specs), salt, None) if specs[t].reserved else b""

    @functools.lru_cache(maxsize=8)  # the tensors tagged chunk by chunk: a staged one needs no array a block
    def internal_of(t: int) -> NDArray[np.bool_]:
        return specs[t].block_storage()[1]

    def tag(job: tuple[int, int, int]) -> NDArray[np.uint64]:  # chunks are disjoint blocks: any order
        t, r0, r1 = job
        spec = specs[t]
        prog.step(f"tag {spec.name}")
        plain = plain_of(t)
        if staged.staged[t]:  # the pass tagged its whole blocks: what is left, from the file
            return staged.rest(t, plain, t not in carriers)
        internal = internal_of(t)
        ub = read_blocks(outs[t], spec, r0, r1, scratch)
        ext = _tag_chunk(ub, t, spec, r0, internal, plain, t not in carriers, mac, salt)
        write_blocks(outs[t], spec, r0, ub)
        # final but for the carriers' few reserved blocks: the disk can start on it while the others are tagged
        write_behind(outs[t][r0 * BLOCK : r1 * BLOCK])
        return ext

    parts: dict[int, list[NDArray[np.uint64]]] = {}  # the header's tags: blocks without room for their own
    try:
        side_by_side(superblock, range(outer.superblocks))
        # the last batches to the disk now, not at the final flush: it writes them while the tag pass runs
        staged.send_ready()
        scratch = _strata.Scratch()  # the superblocks' arrays go: the tag pass keeps one chunk a thread
        for (t, _, _), ext in zip(work, side_by_side(tag, work), strict=True):
            if ext.size:
                parts.setdefault(t, []).append(ext)
    finally:
        staged.close()
    external = {t: np.concatenate(p) for t, p in parts.items()}
    header = Header(
        level=level,
        bits=bits,
        salt=salt,
        key_fingerprint=key.fingerprint,
        lanes=0,
        tensors=tuple(specs),
        external_tags=external,
        user_metadata=meta,
        carriers=carriers,
        copies=emb.copies,
        scheme=SCHEME_IRS,
        code=_strata.CODE_NAME,
        strata=st.G,
        host=st.host,
        strata_perms=st.perms,
        keyed_offset=st.pad_key is not None,
        st_room=st_room,
    )
    _write_carriers(outs, header, key, mac)
    return header


def read_blocks(
    flat: NDArray[np.unsignedinteger], spec: TensorSpec, r0: int, r1: int, scratch: _strata.Scratch | None = None
) -> _model.Blocks:
    """A copy of blocks ``[r0, r1)`` of a tensor's flat values, zero-padded; their pages are released.

    ``scratch``: the copy is its ``blocks`` buffer of that dtype (valid until the thread's next call with it).
    """
    n0, n1 = r0 * BLOCK, min(r1 * BLOCK, spec.numel)
    if scratch is None:
        out = np.zeros((r1 - r0, BLOCK), dtype=flat.dtype)
    else:
        out = scratch.get(f"blocks {flat.dtype.str}", (r1 - r0, BLOCK), flat.dtype.type)
        out.reshape(-1)[max(0, n1 - n0) :] = 0
    if n1 > n0:
        where = file_span(flat[n0:n1])
        if where is not None:  # a read call: no page faults, and nothing left mapped to release
            view = out.reshape(-1)[: n1 - n0].view(np.uint8)
            done = 0
            while done < view.size:
                try:
                    got = os.preadv(where[0], [view[done:].data], where[1] + done)
                except OSError as e:
                    raise InputError(f"cannot read tensor '{spec.name}' from its file: {e.strerror or e}") from e
                if got <= 0:
                    raise InputError(f"cannot read tensor '{spec.name}' from its file: it was cut short meanwhile")
                done += got
            return out
        out.reshape(-1)[: n1 - n0] = flat[n0:n1]
        release(flat[n0:n1])
    return out


def write_blocks(flat: NDArray[np.unsignedinteger], spec: TensorSpec, r0: int, ub: _model.Blocks) -> None:
    """Write blocks back into a tensor's flat values starting at block ``r0`` (padding dropped)."""
    n0, n1 = r0 * BLOCK, min(r0 * BLOCK + ub.size, spec.numel)
    if n1 > n0:
        dst = flat[n0:n1]
        where = file_span(dst)
        src = ub.reshape(-1)[: n1 - n0]
        if where is not None:  # a write call fills the page cache without a page fault per page
            pwrite_all(where[0], np.ascontiguousarray(src).view(np.uint8).reshape(-1).data, where[1])
            return
        dst[:] = src
        release(dst)


def _refuse_non_finite(ub: _model.Blocks, spec: TensorSpec) -> None:
    if spec.is_float and _has_non_finite(ub, spec.dtype):
        raise NonFiniteError(spec.name)


def _has_non_finite(u: NDArray[np.unsignedinteger], dtype: str) -> bool:
    # exponent all ones <=> the value less its sign is at least the exponent mask: one AND and a max
    fmt = FLOATS[dtype]
    if not u.size:
        return False
    mask = (1 << (fmt.exponent + fmt.mantissa)) - 1
    top = _native_blocks.max_masked(u, mask)  # compiled: one pass, no temporary
    if top is None:
        top = int((u & u.dtype.type(mask)).max())
    return top >= ((1 << fmt.exponent) - 1) << fmt.mantissa


def probe_header(
    specs: list[TensorSpec],
    level: str,
    bits: int | None,
    salt: bytes,
    key: Key,
    meta: dict[str, str],
    irs: bool = False,
    st_room: bool = False,
) -> tuple[Header, int]:
    """A header as long as the final one but for a few digits, and how many characters those may add.

    Tags, MACs and digests have fixed widths, so only the reserved block counts, the
    lane count and the carriers can still grow the JSON: allow them 7 digits each.
    ``st_room``: the header will record a safetensors header length (given its widest here).
    """
    ext = {t: np.zeros(n, np.uint64) for t, s in enumerate(specs) if (n := s.external_count())}
    probe = Header(  # copies=MAX_COPIES: its field then counts in the length, as it will with 2 or more
        level,
        bits,
        salt,
        key.fingerprint,
        0,
        tuple(specs),
        ext,
        meta,
        carriers=(0,) * _embed.CARRIERS,
        copies=_embed.MAX_COPIES,
        st_room=ST_ROOM_LIMIT if st_room else 0,
    )
    if irs:
        probe = replace(
            probe,
            scheme=SCHEME_IRS,
            code=_strata.CODE_NAME,
            strata=10**12,
            host=9,
            strata_perms=_strata.PERMS,
            keyed_offset=True,
        )
    slack = 7 * (len(specs) + 1 + _embed.CARRIERS)
    _refuse_unreadable_length(probe, slack, key)
    return probe, slack


def _refuse_unreadable_length(probe: Header, slack: int, key: Key) -> None:
    """Refuse a seal whose header verify would not read: it refuses one that long as edited or corrupted (exit 2).

    The tags of blocks with no room for their own (integer and bool tensors, floats holding NaN/Inf) are kept in the
    header, about 5.3 characters a block: an int8 model of some 800M values passed the limit, sealed without a word.
    """
    n, limit = len(probe.to_json(key)) + slack, max_header_chars()
    if n <= limit:
        return
    blocks = sum(v.size for v in probe.external_tags.values())
    meta = len(json.dumps(probe.user_metadata or {}))
    raise UnsupportedError(
        f"cannot seal this model: its seal header would be up to {n} characters, and verify reads at most {limit} "
        f"(a longer one reads as tampered). It keeps the tags of {blocks} blocks of {BLOCK} values that have no "
        f"low bits to carry their own (integer and bool tensors, float tensors holding NaN/Inf), about 5.3 "
        f"characters each, and {meta} characters of metadata; seal a model with fewer such values (say, its "
        "integer tensors apart from its floats), or less metadata. Nothing was written"
    )
