"""The seal header carried inside the weights, so a model verifies without its file metadata.

Every float tensor with room gets an identity **record** in the storage bits
(after the tag) of its first blocks; up to two of the largest tensors, the
**carriers**, also hold the header JSON right after their record: one copy each,
or three in a lone carrier, and 7 (12 at k = 12) between them where that costs at most 0.5% of the
blocks (copies may take at most 2% of the blocks, so a tiny model keeps its header
in the metadata only). A header whose copies were all hit is rebuilt from them
(`merged_copies`: pluralities by nibble, corrected by whole values, by byte and by nibble, mixes
of two, a lone copy with one bit flipped back) before it is given up. Those blocks
store no parity (``TensorSpec.reserved``), but their tags cover the record and
the copy, so both are authenticated like any other bit; the copy itself is the
HMAC'd header without the user metadata (its digest is under the MAC).

With the header in the metadata this is only used to match renamed tensors by
identity. Without it (metadata stripped, or converted to ``.pt``/``.npz`` by
another tool) ``find_header`` reads the copy: a record is found by trying each
possible k, since k itself is in the header. Where a carrier's record is gone (its first
block zeroed), `located_copies` finds the copies after it by where they start, or
where they repeat.

Record (little-endian): magic ``PSL`` + byte 2 | tensor index u32 | tensor count u32 |
salt[:8] | header length u32.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from . import _bits
from ._embed_merge import (
    _RECORD,
    RECORD_BYTES,
    _candidates,
    _flipped,
    _matching,
    _Slot,
    _text,
    block_bytes,
    blocks_needed,
)
from ._layout import TensorSpec, block_count
from ._pages import read
from .levels import BLOCK, FLOATS, TAG_BITS, dtype_name

MAGIC = b"PSL\x02"
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
MERGE_LIMIT = 4096  # candidates `merged_copies` yields in all (and MERGE_TEXT bytes): a crafted model
MERGE_TEXT = 64 << 20  # must not make verify authenticate for long
FLIP_LIMIT = 16 << 10  # a lone copy is also tried with each one of its bits flipped: this many in all (2 KiB of copy)
COPY_START = b'{"bits":'  # how every copy begins (canonical JSON, keys sorted: "bits" is the first)
LOCATE_FIRST = 4 << 10  # `located_copies` reads this much storage of a tensor at a k first, then 8 times more,
LOCATE_BYTES = 32 << 20  # up to this much in all (each window within the copy budget)
_HEADER_MIN = 160  # bytes every header has: its hmac, salt and key fingerprint in hex (112) and their field names
LOCATE_LENGTHS = 16  # header lengths `located_copies` tries in all (a real seal's copies give one or two)
PERIOD_BYTES = 1 << 20  # `_periods` looks for repeats in this much of a carrier's storage
PERIODS, PERIOD_VOTES = 2, 8  # it gives the most frequent distances, each seen this many times
PERIOD_RARE = 2 * MAX_COPIES  # among 4-byte sequences found at most this often (once or twice a copy)
TEXT_PIECE, TEXT_SHARE = 1024, 0.6  # in pieces this long with this share of printable bytes or more
# byte comparisons among the slots read for each length (slots x slots x length: `_matching`, `_embed_merge._plurality`
# and the mixes each compare every pair) that `merged_copies` and `located_copies` each spend in all:
# 48 slots (12 in each of the 4 largest tensors) of a 100 KiB header take 1.3 GiB a length (COMPARE_COST)
COMPARE_LIMIT = 2 << 30
COMPARE_COST = 6  # comparisons a pair of slots costs a byte: the byte plurality 1, the nibbles' 2, `_agreeing` 3


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
    """Find a record in ``a`` without knowing k (tries each possible k); ``damaged`` as in `read_record`."""
    if not _float(a):  # only float tensors hold records
        return None
    for k in _ks(dtype_name(a.dtype)):
        if (f := read_record(a, k, damaged=damaged)) is not None:
            return f
    return None


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


def merged_copies(tensors: Mapping[str, NDArray[np.generic]]) -> Iterator[str]:
    """Header texts rebuilt from damaged copies: each copy, pluralities (by byte, nibble), mixes, one-bit flips.

    A mix of two takes, at each byte where they differ, either one's byte. The copies have no
    parity of their own, so a flip in each leaves none authentic; but unless every copy was hit
    at the same byte, the plurality (`_embed_merge._plurality`: three copies or more) or a mix of two is the header.
    A lone copy (a carrier with room for one only) is also tried with each one of its bits
    flipped (``FLIP_LIMIT`` bits in all), which undoes a single hit in it.
    A copy whose record was hit is still read: at the other records' k, at the length most
    records give first, then at lengths with one bit of it undone (a hit length field), in the
    largest float tensors (where carriers are). Lengths past the copy budget are skipped,
    candidates are yielded once, and at most ``MERGE_LIMIT`` of them (and ``MERGE_TEXT`` bytes
    in all): the caller authenticates each, and a crafted model must not make that take long.
    """
    big, budget, found = _survey(tensors)
    recs = {n: f for n, f in found.items() if f.hlen}
    ks = sorted({f.k for f in recs.values()})
    votes = collections.Counter(f.hlen for f in recs.values())
    recorded = [h for h, _ in votes.most_common()]
    flipped = sorted({h ^ (1 << b) for h in recorded for b in range(32)} - set(recorded))
    limit = _Limit()
    for hlen in (*recorded, *flipped):
        if not (0 < hlen and any(blocks_needed(k, RECORD_BYTES + hlen) <= budget for k in ks)):
            continue
        yield from limit.rebuilt(limit.copies(tensors, big, {n: f.k for n, f in recs.items()}, ks, hlen), hlen)
        if limit.spent:
            return


def carries_seal(tensors: Mapping[str, NDArray[np.generic]]) -> bool:
    """Whether the weights hold a seal's traces: a record, or a header copy where seal puts one."""
    return sealed_traces(tensors)[0] > 0 or copies_located(tensors)


def copies_located(tensors: Mapping[str, NDArray[np.generic]]) -> bool:
    """Whether a copy's start (``COPY_START``) lies where seal puts copies: without a key, the sign of a seal.

    Repeats (`_periods`) are no such sign: a tensor of a few values (weights quantised to three
    levels, cast to float) repeats its low bits' text at every distance, and seal must not refuse it.
    """
    return next(located_copies(tensors, repeats=False), None) is not None


def located_copies(tensors: Mapping[str, NDArray[np.generic]], *, repeats: bool = True) -> Iterator[str]:
    """Header texts from copies whose record is gone or wrong, found where seal put them.

    Without its record (a burst over a carrier's first blocks) a carrier says neither its k nor
    the header length, and a record hit in its length field gives a wrong one. But copy ``i`` starts
    with ``COPY_START`` at storage byte ``RECORD_BYTES + i * length``, within the copy budget: in
    the largest float tensors, at their record's k or else at each k, that start is looked for
    (in a window growing eightfold a round, ``LOCATE_BYTES`` read in all). Each start gives lengths:
    the JSON object it opens, its distance past the record (copy 1 or 2), the distance between two
    starts. Each length's copies, majority and mixes are yielded as by `merged_copies` (with its
    bounds). The caller authenticates each: a start found in other bits costs a candidate, never trust.
    ``repeats``: also lengths from where the copies' text repeats (`_periods`), first.
    """
    big, budget, found = _survey(tensors)
    ks = {f.k for f in found.values()}
    k_of = {n: f.k for n, f in found.items()}
    tried: set[int] = set()
    limit = _Limit()
    read, window = 0, LOCATE_FIRST
    # a tensor whose record gives its k at that k: its length may be what was hit (a replaced value
    # rewrites a byte of it, past the one-bit variants `merged_copies` tries)
    pairs = [
        (n, k) for n in big for k in ([found[n].k] if n in found else _ks(dtype_name(np.asarray(tensors[n]).dtype)))
    ]
    while pairs:
        grow: list[tuple[str, int]] = []
        for n, k in pairs:
            flat = _bits.uint_view(np.asarray(tensors[n]))
            room = min(int(budget), flat.size // BLOCK) * block_bytes(k)  # copies lie within the budget
            nb = min(blocks_needed(k, min(window, room)), (LOCATE_BYTES - read) // block_bytes(k), flat.size // BLOCK)
            if nb <= 0:
                continue
            data = _storage(flat[: nb * BLOCK].reshape(nb, BLOCK), k)
            read += len(data)
            if len(data) < room:
                grow.append((n, k))
            for hlen in [*(_periods(data) if repeats else []), *_lengths(data)]:
                if hlen in tried or blocks_needed(k, RECORD_BYTES + hlen) > budget:
                    continue
                if len(tried) >= LOCATE_LENGTHS:  # each length reads copy slots: a crafted model gets a few
                    return
                tried.add(hlen)
                yield from limit.rebuilt(limit.copies(tensors, big, k_of | {n: k}, sorted(ks | {k}), hlen), hlen)
                if limit.spent:
                    return
        pairs, window = grow, window * 8


def _lengths(data: bytes) -> list[int]:
    """Header lengths the copy starts in ``data`` (a carrier's storage, record first) give (see `located_copies`).

    `located_copies` tries the repeats' lengths (`_periods`) before these: a wrong length costs
    candidates, and a length a copy start gives may be a fraction of the header's (a start hit,
    the next one whole).
    """
    starts: list[int] = []
    at = data.find(COPY_START, RECORD_BYTES)
    while at >= 0 and len(starts) <= MAX_COPIES:  # seal's copies are the first starts past the record
        starts.append(at)
        at = data.find(COPY_START, at + 1)
    out = {q - p for i, p in enumerate(starts) for q in starts[i + 1 :]}
    out |= {(p - RECORD_BYTES) // i for p in starts for i in range(1, MAX_COPIES) if (p - RECORD_BYTES) % i == 0}
    text = data.decode("latin-1")  # a byte a character: offsets stay byte offsets
    for p in starts:
        try:
            obj, end = json.JSONDecoder().raw_decode(text, p)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.add(end - p)
    return sorted(h for h in out if h > 0)


def _periods(data: bytes) -> list[int]:
    """Header lengths the repeats in a carrier's storage (record first) give: where its copies recur.

    Copy ``i + 1`` repeats copy ``i`` a header length on, so a 4-byte sequence found once in the
    header (hex digits, a name's numbers) recurs at that distance wherever both copies still hold it.
    Scattered damage leaves no copy start whole, but most sequences: the distances between the places
    of each sequence found at most ``PERIOD_RARE`` times are counted, and the most frequent (past
    ``_HEADER_MIN``) are the length (from each place to the next two: linear time). Frequent ones are
    skipped: in a header of many like-named tensors (MiniLM's 103) a sequence such as ``"dty`` recurs
    every entry, and those distances outvoted the length. Other bits (the words of other tensors'
    parity) rarely repeat a sequence at all.
    """
    body = np.frombuffer(data, np.uint8)[RECORD_BYTES : RECORD_BYTES + PERIOD_BYTES]

    # Only the leading text (copies, also damaged ones) is searched: other bits, such as the low bits
    # of a model never sealed, are printable at 95/256 of their bytes, and are skipped at little cost.
    def texty(b: NDArray[np.uint8]) -> NDArray[np.bool_]:  # per piece of b (a short b: one piece)
        pieces = b[: max(1, b.size // TEXT_PIECE) * TEXT_PIECE].reshape(-1, min(b.size, TEXT_PIECE))
        counts = np.count_nonzero((pieces >= 0x20) & (pieces < 0x7F), axis=1)
        return np.asarray(counts >= TEXT_SHARE * pieces.shape[1])

    if body.size < 2 * _HEADER_MIN or not texty(body[:TEXT_PIECE]).all():  # the copies start here
        return []
    text = texty(body)
    body = body[: TEXT_PIECE * int(np.argmin(text)) if not text.all() else body.size].astype(np.uint32)
    grams = body[:-3] | body[1:-2] << 8 | body[2:-1] << 16 | body[3:] << 24
    at = np.argsort(grams, kind="stable")  # equal sequences in place order
    seq = grams[at]
    # a header holds no NUL: sequences with one are padding, or other bits' structure (low bits left zero)
    nul = np.zeros(grams.size, bool)
    for z in (body[:-3], body[1:-2], body[2:-1], body[3:]):
        nul |= z == 0
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    sizes = np.diff(np.r_[starts, seq.size])
    each = np.repeat(sizes, sizes)
    kept = np.flatnonzero((each > 1) & (each <= PERIOD_RARE) & ~nul[at])  # whole runs: still in sorted order
    seq, at = seq[kept], at[kept]
    gaps = [np.zeros(0, at.dtype)]
    for r in (1, 2):  # each place and the sequence's next two: a sequence found twice a copy gives the length too
        pair = seq[r:] == seq[:-r]
        gaps.append(at[r:][pair] - at[:-r][pair])
    found = np.concatenate(gaps)
    counts = np.bincount(found[found >= _HEADER_MIN])
    top = np.argsort(counts)[::-1][:PERIODS]
    return [int(h) for h in top if counts[h] >= PERIOD_VOTES]  # most frequent first


def _survey(tensors: Mapping[str, NDArray[np.generic]]) -> tuple[list[str], float, dict[str, Found]]:
    """The largest float tensors (where carriers are), the copy budget in blocks, and their records (a bit off too)."""
    floats = [n for n in tensors if _float(np.asarray(tensors[n]))]
    big = sorted(floats, key=lambda n: -int(np.asarray(tensors[n]).size))[: 2 * CARRIERS]
    budget = COPY_BUDGET * sum(block_count(int(np.asarray(tensors[n]).size)) for n in floats)
    found = {n: f for n in big if (f := scan(np.asarray(tensors[n]), damaged=True)) is not None}
    return big, budget, found


@dataclass(slots=True)
class _Limit:
    """Candidates yielded once each: at most ``MERGE_LIMIT`` (and ``FLIP_LIMIT`` flips), ``MERGE_TEXT`` bytes."""

    seen: set[bytes] = field(default_factory=set)
    left: int = MERGE_LIMIT
    text_left: int = MERGE_TEXT
    flips_left: int = FLIP_LIMIT
    compare_left: int = field(default_factory=lambda: COMPARE_LIMIT)  # read when made: tests lower it

    @property
    def spent(self) -> bool:
        return self.left < 0 or self.text_left < 0 or self.compare_left <= 0

    def copies(
        self, tensors: Mapping[str, NDArray[np.generic]], big: list[str], k_of: dict[str, int], ks: list[int], hlen: int
    ) -> list[_Slot]:
        """Copies of length ``hlen`` (`_slots`, `_matching`), as many as the comparisons left allow."""
        cost = COMPARE_COST * hlen  # per pair of slots
        found = _slots(tensors, big, k_of, ks, hlen, math.isqrt(max(self.compare_left, 0) // cost))
        self.compare_left -= len(found) ** 2 * cost
        return _matching(found, hlen)

    def rebuilt(self, raw: list[_Slot], hlen: int) -> Iterator[str]:
        """Texts from the copies ``raw`` of one length: `_candidates`, then a lone copy's one-bit flips."""
        yield from self.texts(_candidates(raw, hlen))
        # A lone copy (one carrier with room for one, the other carrier's lost) has nothing to be mixed
        # with, but one bit flipped in it (a flip, or a replaced value at k = 1) is undone.
        if len(raw) == 1 and hlen * 8 <= self.flips_left and not self.spent:
            self.flips_left -= hlen * 8
            yield from self.texts(_flipped(raw[0].data), flips=True)

    def texts(self, candidates: Iterator[bytes], *, flips: bool = False) -> Iterator[str]:
        for cand in candidates:
            if cand in self.seen:
                continue
            self.seen.add(cand)
            self.text_left -= len(cand)
            self.left -= not flips  # flips have their own bound, taken whole by `rebuilt`
            if self.spent:
                return
            yield from _text(cand)


def _slots(
    tensors: Mapping[str, NDArray[np.generic]],
    big: list[str],
    k_of: dict[str, int],
    ks: list[int],
    hlen: int,
    most: int,
) -> list[_Slot]:
    """Up to ``most`` copy slots of length ``hlen`` (not all zero), with their place in their carrier.

    Each carrier's slots are read at once, at most ``MERGE_TEXT`` bytes in all: a crafted length must
    not make the reader copy out the model (`_matching`, `_embed_merge._plurality` and the mixes grow with it too).
    """
    found: list[tuple[int, int, bytes]] = []
    left = min(MERGE_TEXT // hlen, most)
    for n in big:
        for k in [k_of[n]] if n in k_of else ks:
            if left <= 0:
                break
            slots = _copy_bytes(np.asarray(tensors[n]), k, hlen, min(MAX_COPIES, left) - 1, every=True) or b""
            left -= len(slots) // hlen
            found += [(i, k, c) for i in range(len(slots) // hlen) if any(c := slots[i * hlen : (i + 1) * hlen])]
    return [_Slot(i, k, np.frombuffer(c, np.uint8)) for i, k, c in found]


def _copy_bytes(a: NDArray[np.generic], k: int, hlen: int, copy: int = 0, *, every: bool = False) -> bytes | None:
    """Copy ``copy`` of the ``hlen`` header bytes a carrier sealed at ``k`` would hold (whatever its record says).

    ``every``: copies 0 to ``copy`` instead, as many of them as the tensor holds (None: not one).
    """
    flat = _bits.uint_view(a)
    if copy < 0 or flat.dtype.itemsize * 8 <= k or block_bytes(k) <= 0:
        return None
    fits = (flat.size // BLOCK * block_bytes(k) - RECORD_BYTES) // hlen  # whole copies the tensor has room for
    if every:
        copy = min(copy, fits - 1)
    if copy >= fits:
        return None
    end = RECORD_BYTES + (copy + 1) * hlen
    nb = blocks_needed(k, end)
    return _storage(flat[: nb * BLOCK].reshape(nb, BLOCK), k)[end - (copy + 1) * hlen if every else end - hlen : end]


__all__ = [
    "CARRIERS",
    "MAGIC",
    "Found",
    "Plan",
    "carries_seal",
    "copies_located",
    "header_copies",
    "located_copies",
    "merged_copies",
    "sealed_traces",
    "plan",
    "read_record",
    "record",
    "reserved_content",
    "scan",
    "write_reserved",
]
