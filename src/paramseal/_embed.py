"""The seal header carried inside the weights, so a model verifies without its file metadata.

Every float tensor with room gets an identity **record** in the storage bits
(after the tag) of its first blocks; up to two of the largest tensors, the
**carriers**, also hold the header JSON right after their record: one copy each,
or three in a lone carrier, and 7 (12 at k = 12) between them where that costs at most 0.5% of the
blocks (copies may take at most 2% of the blocks, so a tiny model keeps its header
in the metadata only). A header whose copies were all hit is rebuilt from them
(`_embed_find.merged_copies`: pluralities by nibble, corrected by whole values, by byte and by nibble, mixes
of two, a lone copy with one bit flipped back) before it is given up. Those blocks
store no parity (``TensorSpec.reserved``), but their tags cover the record and
the copy, so both are authenticated like any other bit; the copy itself is the
HMAC'd header without the user metadata (its digest is under the MAC).

With the header in the metadata this is only used to match renamed tensors by
identity. Without it (metadata stripped, or converted to ``.pt``/``.npz`` by
another tool) ``find_header`` reads the copy: a record is found by trying each
possible k, since k itself is in the header. Where a carrier's record is gone (its first
block zeroed), `_embed_find.located_copies` finds the copies after it by where they start, or
where they repeat.

Record (little-endian): magic ``PSL`` + byte 2 | tensor index u32 | tensor count u32 |
salt[:8] | header length u32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from . import _bits
from ._embed_merge import (
    _RECORD,
    RECORD_BYTES,
    block_bytes,
    blocks_needed,
)
from ._layout import TensorSpec, block_count
from ._pages import read
from .levels import BLOCK, FLOATS, TAG_BITS, dtype_name

MAGIC = b"PSL\x02"
assert block_bytes(1) >= len(MAGIC)  # `scan` finds every k's magic in a record's first block
CARRIERS = 2
COPIES = 3  # copies a lone carrier holds when the budget allows: any byte has a majority
COPY_BUDGET = 0.02  # at most this fraction of the float blocks holds header copies
# Copies that take at most this fraction of the float blocks cost the irs4 groups a fraction of a word
# of radius each: then as many as a byte-wise plurality needs to outlast scattered damage up to the
# level's capacity target, in all carriers together: 10% of the values at k <= 8 (a byte of a copy is
# hit about as often), 20% at k = 12, where a byte may span two values (about a quarter of them hit).
# More would cost the code capacity for nothing (the probe header counts the field as MAX_COPIES).
CHEAP_BUDGET = 0.005
WANTED, WANTED_WIDE = 7, 12
MAX_COPIES = WANTED_WIDE
_HEADER_MIN = 160  # bytes every header has: its hmac, salt and key fingerprint in hex (112) and their field names


@dataclass(frozen=True, slots=True)
class Plan:
    """Which tensors carry a record, which carry the header copy, and room reserved for it."""

    specs: list[TensorSpec]
    carriers: tuple[int, ...]
    room: int  # header bytes a carrier can hold
    copies: int = 1  # copies of the header in each carrier


def plan(specs: list[TensorSpec], header_bytes: int) -> Plan:
    """Reserve record blocks in every float tensor with room, and a header copy in up to two carriers."""
    out = list(specs)
    fits = [i for i, s in enumerate(specs) if s.is_float and s.numel // BLOCK >= blocks_needed(s.k, RECORD_BYTES)]
    need = RECORD_BYTES + header_bytes
    # Largest storage first: a big tensor holds the copy in a small fraction of its blocks.
    by_room = sorted(fits, key=lambda i: (-(specs[i].numel // BLOCK) * block_bytes(specs[i].k), i))
    # A copy is worth a little capacity, not much: small models keep their header in the metadata only.
    floats = sum(s.nblocks for s in specs if s.is_float)
    total = budget = COPY_BUDGET * floats
    chosen: list[int] = []
    for i in by_room:
        cost = blocks_needed(specs[i].k, need)
        if len(chosen) < CARRIERS and specs[i].numel // BLOCK >= cost and cost <= budget:
            chosen.append(i)
            budget -= cost
    carriers = tuple(chosen)
    # The copies carry no parity: a flip in each of two leaves neither intact, but two carriers'
    # copies can still be mixed (`merged_copies`). A lone carrier holds three where the budget
    # allows, so that every byte has a majority. Where copies are cheap (a larger model) the carriers
    # hold WANTED (or WANTED_WIDE) between them. (Otherwise two carriers keep one each: reserved blocks
    # cost the irs4 groups parity, and strong's 20% scattered point on a 1M-value model is at its edge.)
    copies = 1
    wanted = WANTED_WIDE if max((specs[i].k for i in carriers), default=0) >= 12 else WANTED
    for n in range(max(COPIES, -(-wanted // max(1, len(carriers)))), 1, -1):
        sizes = [blocks_needed(specs[i].k, RECORD_BYTES + n * header_bytes) for i in carriers]
        cap = total if n <= COPIES and len(carriers) == 1 else CHEAP_BUDGET * floats
        if sum(sizes) <= cap and all(specs[i].numel // BLOCK >= b for i, b in zip(carriers, sizes, strict=True)):
            copies = n
            break
    for i in fits:
        size = RECORD_BYTES + copies * header_bytes if i in carriers else RECORD_BYTES
        out[i] = replace(specs[i], reserved=blocks_needed(specs[i].k, size))
    return Plan(out, carriers, header_bytes, copies if carriers else 1)


def record(index: int, ntensors: int, salt: bytes, header_len: int) -> bytes:
    """The identity record of tensor ``index``."""
    return _RECORD.pack(MAGIC, index, ntensors, salt[:8], header_len)


def reserved_content(
    spec: TensorSpec, index: int, ntensors: int, salt: bytes, header: bytes | None, copies: int = 1
) -> bytes:
    """Bytes for all reserved blocks of one tensor: record, ``copies`` header copies if a carrier, zero padding."""
    body = record(index, ntensors, salt, len(header) if header else 0) + (header or b"") * copies
    room = spec.reserved * block_bytes(spec.k)
    if len(body) > room:
        raise AssertionError(f"embedded header of {len(body)} bytes exceeds the {room} reserved")  # plan() sized it
    return body.ljust(room, b"\0")


def write_reserved(
    ub: NDArray[np.unsignedinteger],
    spec: TensorSpec,
    content: bytes,
    rows: NDArray[np.int64],
    r0: int = 0,
    at: NDArray[np.int64] | None = None,
) -> None:
    """Write ``content`` (from ``reserved_content``) into the storage of ``rows`` of ``ub``, keeping tags.

    Row ``i`` of ``ub`` is block ``at[i]`` of the tensor (default ``r0 + i``); rows that are
    not reserved blocks are left alone.
    """
    blocks = rows + r0 if at is None else at[rows]
    keep = blocks < spec.reserved
    rows, blocks = rows[keep], blocks[keep]
    if not rows.size:
        return
    per = block_bytes(spec.k)
    sub = ub[rows]
    lo = _bits.lo_bytes(sub, spec.k).copy()
    lo[:, TAG_BITS // 8 :] = np.frombuffer(content, np.uint8).reshape(spec.reserved, per)[blocks]
    _bits.set_lo(sub, lo, spec.k)
    ub[rows] = sub


def _storage(ub: NDArray[np.unsignedinteger], k: int) -> bytes:
    return _bits.lo_bytes(read(ub), k)[:, TAG_BITS // 8 :].tobytes()


@dataclass(frozen=True, slots=True)
class Found:
    """A record read from a tensor (untrusted until the header and tags verify)."""

    k: int
    index: int
    ntensors: int
    salt8: bytes
    header: bytes  # empty unless a carrier
    hlen: int = 0  # the header length the record gives (it may not fit when the record is damaged)


def read_record(a: NDArray[np.generic], k: int, *, damaged: bool = False) -> Found | None:
    """The record of ``a`` if it was sealed with ``k`` low bits, else None.

    ``damaged``: also a record whose magic is a bit or two off (only to find where copies lie).
    """
    flat = _bits.uint_view(a)
    n0 = blocks_needed(k, RECORD_BYTES)
    if flat.size < n0 * BLOCK or block_bytes(k) <= 0:
        return None
    head = _storage(flat[: n0 * BLOCK].reshape(n0, BLOCK), k)
    magic, index, count, salt8, hlen = _RECORD.unpack(head[:RECORD_BYTES])
    if damaged:
        if (int.from_bytes(magic, "little") ^ int.from_bytes(MAGIC, "little")).bit_count() > 2:
            return None
    elif magic != MAGIC or index >= count:
        return None
    text = b""
    if hlen:
        nb = blocks_needed(k, RECORD_BYTES + hlen)
        if flat.size < nb * BLOCK:
            return Found(k, index, count, salt8, b"", hlen) if damaged else None
        text = _storage(flat[: nb * BLOCK].reshape(nb, BLOCK), k)[RECORD_BYTES : RECORD_BYTES + hlen]
    return Found(k, index, count, salt8, text, hlen)


def _ks(dtype: str) -> Iterator[int]:
    fmt = FLOATS[dtype]
    levels = sorted(set(fmt.levels.values()))
    yield from levels
    yield from (k for k in range(1, fmt.mantissa) if k not in levels)


def scan(a: NDArray[np.generic], *, damaged: bool = False) -> Found | None:
    """Find a record in ``a`` without knowing k (tries each possible k); ``damaged`` as in `read_record`.

    The magic lies in the first block's storage at every k (`block_bytes` (1) holds it): that block is
    read once and each k's magic looked at in memory; only a k whose magic fits reads its record (seal
    asks this of every tensor of every model, where a read per k took a tenth of the seal).
    """
    if not _float(a):  # only float tensors hold records
        return None
    flat = _bits.uint_view(a)
    if flat.size < BLOCK:  # no record's first block at any k
        return None
    first = read(flat[:BLOCK].reshape(1, BLOCK))
    for k in magic_ks(first, list(_ks(dtype_name(a.dtype))), damaged):
        if (f := read_record(a, k, damaged=damaged)) is not None:
            return f
    return None


def magic_ks(first: NDArray[np.unsignedinteger], ks: list[int], damaged: bool) -> list[int]:
    """The k of ``ks``, in order, at which the first block (``[1, BLOCK]``) holds a record's magic (as `read_record`).

    All k at once: byte i of the block's low-k bits (`_bits.lo_bytes`) holds bits 8 i .. 8 i + 7 of the
    stream in which bit b is bit b % k of value b // k. (One k at a time, 22 packings a fp32 tensor took a
    quarter of the already-sealed check's time, beside the seal's start.)
    """
    bits = _bits.value_bits(first)[0]  # [BLOCK, width], LSB first
    b = np.arange(TAG_BITS, TAG_BITS + 8 * len(MAGIC))
    at = np.asarray(ks, np.int64)[:, None]
    got = np.packbits(bits[b // at, b % at], axis=1, bitorder="little")
    wrong = np.unpackbits(got ^ np.frombuffer(MAGIC, np.uint8), axis=1).sum(axis=1)
    fits = wrong <= 2 if damaged else wrong == 0
    return [k for k, f in zip(ks, fits.tolist(), strict=True) if f]


def sealed_traces(tensors: Mapping[str, NDArray[np.generic]]) -> tuple[int, bool]:
    """Records left in a model whose header copies are gone: how many, and whether it never had copies.

    A model once sealed keeps a record in every float tensor with room. A record that gives a
    copy says the model had one. Copies go to the tensors with the most room first whose copy
    fits the copy budget, so when no intact record holds a copy and no tensor whose record is
    gone could have carried one within that budget, the model was too small to carry one: its
    header lived in the metadata only.
    """
    found = {n: scan(np.asarray(a)) for n, a in tensors.items()}

    recs = [f for f in found.values() if f is not None]
    # never sealed (seal asks this of every model), or a copy is there: the copy's cost, not the
    # tensor's room, picks a carrier, so a smaller tensor with a wider k (an fp64 one) may hold it
    if not recs or any(f.header for f in recs):
        return len(recs), False
    from .seal import non_finite  # seal imports this module

    # tensors without a record that could have carried a copy (at their widest k, the cheapest in blocks):
    # not only ones with more room than the one with the most, as the budget may have passed that one by
    budget = COPY_BUDGET * sum(block_count(int(np.asarray(a).size)) for a in tensors.values() if _float(np.asarray(a)))

    # the least a copy takes: the header's fixed fields, and the names of the tensors with records it lists
    need = RECORD_BYTES + _HEADER_MIN + sum(len(n) + 2 for n, f in found.items() if f is not None)

    def could_carry(a: NDArray[np.generic]) -> bool:
        cost = blocks_needed(FLOATS[dtype_name(a.dtype)].mantissa - 1, need)
        return a.size // BLOCK >= cost and cost <= budget

    lost = {
        n: np.asarray(a)
        for n, a in tensors.items()
        if found[n] is None and _float(np.asarray(a)) and could_carry(np.asarray(a))
    }
    # one holding NaN or Inf was sealed as data (k=0): it never had a record to lose (read only if needed)
    return len(recs), not lost or set(lost) <= non_finite(lost)


def _float(a: NDArray[np.generic]) -> bool:
    try:
        return dtype_name(a.dtype) in FLOATS
    except Exception:  # noqa: BLE001 - not a dtype we seal
        return False


def header_copies(tensors: Mapping[str, NDArray[np.generic]]) -> list[tuple[str, str]]:
    """Candidate header texts found in carriers, largest tensors first: ``[(tensor name, text)]``."""
    out: list[tuple[str, str]] = []
    for name in sorted(tensors, key=lambda n: -int(np.asarray(tensors[n]).size)):
        f = scan(np.asarray(tensors[name]))
        if f is not None and f.header:
            try:
                out.append((name, f.header.decode("utf-8")))
            except UnicodeDecodeError:
                continue
            if len(out) == CARRIERS:
                break
    return out


__all__ = [
    "CARRIERS",
    "MAGIC",
    "Found",
    "Plan",
    "header_copies",
    "sealed_traces",
    "plan",
    "read_record",
    "record",
    "reserved_content",
    "scan",
    "write_reserved",
]
