"""Finding the header's copies in the weights where their records cannot be trusted, and rebuilding it from them.

`merged_copies` rebuilds a header whose copies were all hit, `located_copies` finds copies whose record is gone
or wrong by where they start or repeat, and `carries_seal` says without a key whether a model bears a seal's traces.
Separate from `_embed` (planning, writing and reading the records and copies), which it reads them with.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from . import _bits, _json, _native
from ._embed import (
    _HEADER_MIN,
    CARRIERS,
    COPY_BUDGET,
    MAX_COPIES,
    Found,
    _float,
    _ks,
    _storage,
    scan,
    sealed_traces,
)
from ._embed_merge import (
    RECORD_BYTES,
    _candidates,
    _flipped,
    _matching,
    _Slot,
    _text,
    block_bytes,
    blocks_needed,
)
from ._layout import block_count
from ._native_blocks import find_packed
from ._pages import read
from .levels import BLOCK, TAG_BITS, dtype_name

MERGE_LIMIT = 4096  # candidates `merged_copies` yields in all (and MERGE_TEXT bytes): a crafted model
MERGE_TEXT = 64 << 20  # must not make verify authenticate for long
FLIP_LIMIT = 16 << 10  # a lone copy is also tried with each one of its bits flipped: this many in all (2 KiB of copy)
COPY_START = b'{"bits":'  # how every copy begins (canonical JSON, keys sorted: "bits" is the first)
LOCATE_FIRST = 4 << 10  # `located_copies` reads this much storage of a tensor at a k first, then 8 times more,
LOCATE_BYTES = 32 << 20  # up to this much in all (each window within the copy budget)
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
_Survey = tuple[list[str], float, dict[str, Found]]  # `_survey`'s: the largest float tensors, budget, records
FIND_BLOCKS = 1 << 14  # blocks seal's check for copy starts reads at a time (`_no_start`: 4 MiB of fp32 words)


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
    survey = _survey(tensors)
    return not _no_start(tensors, survey) and next(_located(tensors, survey, repeats=False), None) is not None


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
    return _located(tensors, _survey(tensors), repeats=repeats)


def _located(tensors: Mapping[str, NDArray[np.generic]], survey: _Survey, *, repeats: bool) -> Iterator[str]:
    """`located_copies` with the tensors' `_survey` made."""
    big, budget, found = survey
    ks = {f.k for f in found.values()}
    k_of = {n: f.k for n, f in found.items()}
    tried: set[int] = set()
    limit = _Limit()
    for n, k, nb in _windows(tensors, survey):
        flat = _bits.uint_view(np.asarray(tensors[n]))
        data = _storage(flat[: nb * BLOCK].reshape(nb, BLOCK), k)
        for hlen in [*(_periods(data) if repeats else []), *_lengths(data)]:
            if hlen in tried or blocks_needed(k, RECORD_BYTES + hlen) > budget:
                continue
            if len(tried) >= LOCATE_LENGTHS:  # each length reads copy slots: a crafted model gets a few
                return
            tried.add(hlen)
            yield from limit.rebuilt(limit.copies(tensors, big, k_of | {n: k}, sorted(ks | {k}), hlen), hlen)
            if limit.spent:
                return


def _windows(tensors: Mapping[str, NDArray[np.generic]], survey: _Survey) -> Iterator[tuple[str, int, int]]:
    """``(tensor, k, blocks)``: the storage windows `located_copies` reads, in its order (see there).

    Each is a tensor's first blocks at a k, in a window growing eightfold a round, ``LOCATE_BYTES`` in all.
    """
    big, budget, found = survey
    read, window = 0, LOCATE_FIRST
    # a tensor whose record gives its k at that k: its length may be what was hit (a replaced value
    # rewrites a byte of it, past the one-bit variants `merged_copies` tries)
    pairs = [
        (n, k) for n in big for k in ([found[n].k] if n in found else _ks(dtype_name(np.asarray(tensors[n]).dtype)))
    ]
    while pairs:
        grow: list[tuple[str, int]] = []
        for n, k in pairs:
            blocks = np.asarray(tensors[n]).size // BLOCK
            room = min(int(budget), blocks) * block_bytes(k)  # copies lie within the budget
            nb = min(blocks_needed(k, min(window, room)), (LOCATE_BYTES - read) // block_bytes(k), blocks)
            if nb <= 0:
                continue
            read += nb * block_bytes(k)
            if nb * block_bytes(k) < room:
                grow.append((n, k))
            yield n, k, nb
        pairs, window = grow, window * 8


def _no_start(tensors: Mapping[str, NDArray[np.generic]], survey: _Survey) -> bool:
    """Whether no window of `located_copies` holds a copy start: then it yields nothing without ``repeats``.

    Each tensor's words are read once, for its widest window, ``FIND_BLOCKS`` blocks at a time into one
    buffer (not a new array: its pages zeroed and counted), and searched at each k by the compiled
    `_native_blocks.find_packed`, which makes no storage. ``survey``: the tensors' `_survey`. False where
    a start lies in one, or the library is missing.
    """
    if _native._lib() is None:
        return False
    widest: dict[str, dict[int, int]] = collections.defaultdict(dict)
    for n, k, nb in _windows(tensors, survey):  # a later round's window may be the narrower
        widest[n][k] = max(widest[n].get(k, 0), nb)
    # a start found in the blocks past a piece (its 8 bytes span 3 blocks' storage at most, 4 bytes at k = 1)
    over = -(-(len(COPY_START) - 1) // block_bytes(1))
    buf = np.empty((FIND_BLOCKS + over) * BLOCK * 8, np.uint8)
    for n, at_k in widest.items():
        flat = _bits.uint_view(np.asarray(tensors[n]))
        most = max(at_k.values())
        for b0 in range(0, most, FIND_BLOCKS):
            b1 = min(most, b0 + FIND_BLOCKS + over)
            words = read(flat[b0 * BLOCK : b1 * BLOCK], buf).reshape(-1, BLOCK)
            for k, nb in at_k.items():
                if b0 < nb:
                    start = max(0, RECORD_BYTES - b0 * block_bytes(k))
                    at = find_packed(words[: min(nb, b1) - b0], k, TAG_BITS // 8, COPY_START, start)
                    if at is None or at >= 0:
                        return False
    return True


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
    if not starts:
        return []
    out = {q - p for i, p in enumerate(starts) for q in starts[i + 1 :]}
    out |= {(p - RECORD_BYTES) // i for p in starts for i in range(1, MAX_COPIES) if (p - RECORD_BYTES) % i == 0}
    text = data.decode("latin-1")  # a byte a character: offsets stay byte offsets
    for p in starts:
        try:
            obj, end = _json.raw_decode(text, p)
        except ValueError:
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


def _survey(tensors: Mapping[str, NDArray[np.generic]]) -> _Survey:
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


__all__ = ["carries_seal", "copies_located", "located_copies", "merged_copies"]
