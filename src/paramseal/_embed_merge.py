"""Merging damaged header copies: pluralities, values that agree, mixes of two; and where copy bytes lie.

Separate from `_embed` (which writes the records and copies, and reads and finds them) as the
part that works on copies already read: byte arrays voted on, with the storage geometry
(record size, storage bytes per block) that places each byte of a copy in a value.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .levels import BLOCK, TAG_BITS

_RECORD = struct.Struct("<4sII8sI")
RECORD_BYTES = _RECORD.size
MERGE_BYTES = 12  # two damaged copies differing in up to this many bytes are mixed (2^12 mixes a pair)
AGREE_SHARE = 1 / 8  # `_agreeing` looks at most at this share of the nibbles,
AGREE_WINDOWS = 5 / 8  # and at most this many nibbles of their values' windows a nibble (an eighth at k = 12: 5 each)
TIE_MIXES = 1024  # texts `_plurality` makes of the values tied for the most copies at some bytes
VOTE_SHARE = 1 / 8  # a slot votes in the pluralities when it matches another slot at this share of its bytes


def block_bytes(k: int) -> int:
    """Storage bytes a full block has after its tag."""
    return (BLOCK * k - TAG_BITS) // 8


def blocks_needed(k: int, nbytes: int) -> int:
    """Full blocks whose storage holds ``nbytes``."""
    per = block_bytes(k)
    return -(-nbytes // per) if per > 0 else 1 << 62


def _flipped(copy: NDArray[np.uint8]) -> Iterator[bytes]:
    """``copy`` with each one of its bits flipped."""
    for q in range(copy.size * 8):
        one = copy.copy()
        one[q >> 3] ^= 1 << (q & 7)
        yield one.tobytes()


class _Slot(NamedTuple):
    """A copy slot read from a carrier: its place there (copy ``copy`` at ``k``) and its bytes."""

    copy: int
    k: int
    data: NDArray[np.uint8]
    votes: bool = True  # it matches another slot (`_matching`): it may vote in the pluralities


def _matching(found: list[_Slot], hlen: int) -> list[_Slot]:
    """The slots ``found`` that may be copies, each marked whether it may vote (``votes``)."""
    # Past a carrier's copies lie other bits: a later slot counts only when it matches another slot
    # at half its bytes or more (copies hit at a quarter of their bytes match at over half; other
    # bits at 1/256), and the first is always tried: its record may be all that was hit.
    same = np.zeros((len(found), len(found)), np.int64)  # bytes each pair of slots shares (0 with itself)
    for i, j in itertools.combinations(range(len(found)), 2):
        same[i, j] = same[j, i] = np.count_nonzero(found[i].data == found[j].data)
    # But a first slot that matches no other slot at VOTE_SHARE of its bytes is no copy of theirs (slot 0 of
    # a tensor holding a record only: its own low bits): it must not vote, or where two such slots agree by
    # chance (a byte in 256) they tie with two copies, and the tie's mixes put their byte in the header
    # (a key fingerprint no copy names). VOTE_SHARE, not half: a copy a burst hit over most of it still votes.
    return [
        s._replace(votes=bool(n >= VOTE_SHARE * hlen))
        for s, n in zip(found, same.max(axis=1, initial=0), strict=True)
        if s.copy == 0 or 2 * n >= hlen
    ]


def _candidates(raw: list[_Slot], hlen: int) -> Iterator[bytes]:
    """Each of the copies ``raw``; of three or more, pluralities (agreeing values, bytes, nibbles); mixes of two."""
    yield from (s.data.tobytes() for s in raw)  # a later copy of a carrier may be intact
    raw = [s for s in raw if s.votes]  # the mixes of two need no such bound: other bits differ at most bytes
    if len(raw) >= 3:
        votes = np.stack([s.data for s in raw])
        nibbles = np.stack([votes & 15, votes >> 4], axis=2).reshape(len(raw), -1)
        by_nibble = (np.frombuffer(t, np.uint8) for t in _plurality(nibbles))
        counted: list[NDArray[np.uint8]] = []  # the nibble plurality, counted once: `_agreeing` starts from it
        if all(s.k % 4 == 0 for s in raw):  # every nibble lies in one value
            counted.append(next(by_nibble))
            half = _agreeing(nibbles, counted[0], [(s.copy, s.k) for s in raw], hlen)
            yield (half[0::2] | half[1::2] << 4).tobytes()
        yield from _plurality(votes)
        # Nibble by nibble too: at k = 12 (and 4) each nibble lies in one value, in every copy, but a byte
        # straddles two in every copy alike (a header length a multiple of 3), so a third of the bytes are hit
        # about twice as often, in all copies at once: on MiniLM at strong's 20%, a few bytes in every trial.
        for half in itertools.chain(counted, by_nibble):
            yield (half[0::2] | half[1::2] << 4).tobytes()
    for i in range(len(raw)):
        for j in range(i + 1, len(raw)):
            a, b = raw[i].data, raw[j].data
            diff = np.flatnonzero(a != b)
            if not 0 < diff.size <= MERGE_BYTES:
                continue
            for mask in range(1, (1 << diff.size) - 1):  # not all of a, nor all of b: yielded above
                pick = diff[[(mask >> q) & 1 == 1 for q in range(diff.size)]]
                mix = a.copy()
                mix[pick] = b[pick]
                yield mix.tobytes()


def _value_spans(index: int, k: int, hlen: int, m: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per nibble ``m`` of copy ``index`` (``hlen`` bytes at ``k``, a multiple of 4): its value's first and last nibble.

    Both within the copy. A block's storage bits follow its tag's, value j holding bits ``j * k`` on (`_bits.lo_bytes`).
    """
    per, start = block_bytes(k), RECORD_BYTES + index * hlen  # the copy's first storage byte
    block, byte = np.divmod(start + m // 2, per)
    j = (TAG_BITS + 8 * byte + 4 * (m % 2)) // k  # the value, within its block
    base = 2 * (block * per - start)  # the block's first storage nibble, from the copy's
    first = base + (np.maximum(j * k, TAG_BITS) - TAG_BITS) // 4
    last = base + ((j + 1) * k - TAG_BITS) // 4 - 1
    return np.maximum(first, 0), np.minimum(last, 2 * hlen - 1)


def _agreeing(
    nibbles: NDArray[np.uint8], top: NDArray[np.uint8], places: list[tuple[int, int]], hlen: int
) -> NDArray[np.uint8]:
    """The nibble plurality ``top``, but where most copies differ: the nibble of the copy most agree with over a value.

    A replaced value writes random bits over all of it, so two copies agreeing on all 12 bits of a value
    (at k = 12) are both intact there but by a 1/4096 chance: where 10 of 12 copies were hit at the
    same value, the plurality of a nibble may go to hit copies agreeing by chance (1/16), this to the two
    intact ones. Copies whose values are placed differently (``places``: each copy's index and k) must
    agree over both values' nibbles. Only nibbles held by half the copies or fewer are looked at (a few in
    a hundred), and none where more than ``AGREE_SHARE`` of them are (such slots are no copies of one
    text), or where their windows (a value's nibbles either side) hold more than ``AGREE_WINDOWS`` nibbles
    a nibble of the text: wider values (a crafted k = 48) must not cost more than k = 12's share.
    """
    n, size = nibbles.shape
    top = top.copy()
    weak = np.flatnonzero(2 * np.count_nonzero(nibbles == top, axis=0) <= n)
    reach = max(k for _, k in places) // 4 - 1  # nibbles a value spans past the one looked at
    if not weak.size or weak.size > AGREE_SHARE * size or weak.size * (2 * reach + 1) > AGREE_WINDOWS * size:
        return top
    spans = [_value_spans(i, k, hlen, weak) for i, k in places]
    lo, hi = np.stack([s[0] for s in spans]), np.stack([s[1] for s in spans])  # [copies, weak]
    at = weak[:, None] + np.arange(-reach, reach + 1)  # each weak nibble's neighbours a value may cover
    window = nibbles[:, np.clip(at, 0, size - 1)]  # [copies, weak, 2 * reach + 1]
    inside = (lo[:, :, None] <= at) & (at <= hi[:, :, None])
    support = np.zeros((n, weak.size), np.int32)
    for j in range(n):  # per copy, not per value: each copy against copy j over both of their values
        support += ~((window != window[j]) & (inside | inside[j])).any(axis=2)
    best = window[support.argmax(axis=0), np.arange(weak.size), reach]
    top[weak] = np.where(support.max(axis=0) >= 2, best, top[weak])
    return top


def _plurality(votes: NDArray[np.uint8]) -> Iterator[bytes]:
    """Each byte as most of the copies ``votes`` ([copies, length]) hold it; where values tie, each of them.

    Scattered damage writes random bytes, which rarely agree: a byte is lost only where every copy
    was hit, and where as many hit copies agree by chance as intact ones remain (two of three
    hit, each differently) the tie is tried each way, up to ``TIE_MIXES`` texts.
    """
    counts = np.empty(votes.shape, np.int16)  # per copy and byte: copies agreeing with it (in pieces: bounded memory)
    step = max(1, (16 << 20) // votes.shape[0] ** 2)
    for c in range(0, votes.shape[1], step):
        v = votes[:, c : c + step]
        counts[:, c : c + step] = (v[:, None, :] == v[None, :, :]).sum(axis=0)
    top = votes[counts.argmax(axis=0), np.arange(votes.shape[1])]
    yield top.tobytes()
    tied = np.flatnonzero(((counts == counts.max(axis=0)) & (votes != top)).any(axis=0))
    # each tied byte holds two values or more: past log2(TIE_MIXES) of them the mixes are too many, and
    # other bits read as copies (each slot differing) tie at every byte, which must not cost a look at each
    if not tied.size or 1 << tied.size > TIE_MIXES:
        return
    options = [np.unique(votes[counts[:, b] == counts[:, b].max(), b]) for b in tied]
    if math.prod(len(o) for o in options) > TIE_MIXES:
        return
    for pick in itertools.product(*options):  # `top` among them: the caller yields each text once
        mix = top.copy()
        mix[tied] = pick
        yield mix.tobytes()


def _text(b: bytes) -> Iterator[str]:
    try:
        yield b.decode("utf-8")
    except UnicodeDecodeError:
        return


__all__ = ["RECORD_BYTES", "block_bytes", "blocks_needed"]
