"""Reed–Solomon over GF(2^16) (leopard / reed-solomon-simd), run on many lanes at once.

Each lane is one codeword of K data shards and M parity shards of 4 bytes.
Lanes are batched by making lane g's 4 bytes GF(2^16) elements 2g and 2g + 1 of
every shard (in the library's split layout, `_to_split`), so a single library
call codes a whole batch; erasures are then the union over the
batch, so the decoder batches lanes only while that union stays decodable.
"""

from __future__ import annotations

import numpy as np
import reed_solomon_leopard as rsl
from numpy.typing import NDArray

from . import _kernels as _k
from . import _rs16
from ._pages import release
from ._parallel import in_turn, task_map

_BATCH_BYTES = 16 << 20  # data per encode call: bounds the temporary copies (and peak memory)


def _to_split(a: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """``[n, lanes]`` words -> ``[n, shard_bytes]`` in the library's split layout.

    reed-solomon-simd reads GF(2^16) element j of each 64-byte chunk from bytes
    j (low) and j + 32 (high). Each lane gets two whole elements, so every lane
    is its own set of codewords whatever batch it is coded in.
    """
    fast = _k.to_split(a)
    if fast is not None:
        return fast
    n, lanes = a.shape
    pad = -lanes % 16
    v = np.ascontiguousarray(a).view(np.uint16).reshape(n, lanes * 2)
    if pad:
        v = np.concatenate([v, np.zeros((n, 2 * pad), np.uint16)], axis=1)
    v3 = v.reshape(n, -1, 32)
    out = np.empty((n, v3.shape[1], 2, 32), dtype=np.uint8)
    out[:, :, 0, :] = v3 & 0xFF
    out[:, :, 1, :] = v3 >> 8
    return out.reshape(n, -1)


def _from_split(b: NDArray[np.uint8], lanes: int) -> NDArray[np.uint32]:
    """Inverse of ``_to_split``: ``[n, shard_bytes]`` -> ``[n, lanes]`` words."""
    n = b.shape[0]
    c = b.reshape(n, -1, 2, 32)
    v = np.empty((n, c.shape[1], 32), dtype=np.uint16)
    np.left_shift(c[:, :, 1, :], 8, out=v, dtype=np.uint16)
    v |= c[:, :, 0, :]
    return np.ascontiguousarray(v.reshape(n, -1)[:, : 2 * lanes]).view(np.uint32)


def _parity_split(split: NDArray[np.uint8], M: int) -> NDArray[np.uint8]:
    """The library's ``M`` parity shards ``[M, shard_bytes]`` of the split-layout shards ``split``."""
    fast = _rs16.parity(split, M)  # the same bytes compiled, without the GIL or a bytes copy per shard
    raw: NDArray[np.uint8]
    if fast is not None:
        raw = fast.transpose(1, 0, 2)
    else:
        raw = np.frombuffer(b"".join(rsl.encode(_k.rows_as_bytes(split), M)), dtype=np.uint8)
    return raw.reshape(M, -1)


def encode(data: NDArray[np.uint32], M: int) -> NDArray[np.uint32]:
    """Parity ``[M, lanes]`` for shard-major ``data`` ``[K, lanes]``."""
    K, lanes = data.shape
    out = np.zeros((M, lanes), dtype=np.uint32)
    if M == 0:
        return out
    step = max(16, (_BATCH_BYTES // (4 * K)) // 16 * 16)
    for s in range(0, lanes, step):
        e = min(lanes, s + step)
        if not _rs16.parity_words(data[:, s:e], out[:, s:e]):  # compiled: no split copies
            out[:, s:e] = _from_split(_parity_split(_to_split(data[:, s:e]), M), e - s)
    return out


def encode_into(data: NDArray[np.uint32], parity: NDArray[np.uint32]) -> None:
    """Fill ``parity`` ``[M, lanes]`` from ``data`` ``[K, lanes]`` batch by batch, releasing mapped pages.

    With the compiled encoder (no GIL held) the batches run one per core, each holding its columns' sums.
    """
    K, lanes = data.shape
    M = parity.shape[0]
    if M == 0:
        return
    step = lanes_per_call(K)

    def batch(s: int) -> None:
        e = min(lanes, s + step)
        if not _rs16.parity_words(data[:, s:e], parity[:, s:e]):  # the compiled kernel reads and writes in place
            parity[:, s:e] = encode(data[:, s:e], M)  # the split kernel reads the strided view
        release(data[:, s:e], parity[:, s:e])

    (task_map if _rs16.serves(M, K) else in_turn)(batch, range(0, lanes, step))


def lanes_per_call(K: int) -> int:
    """Lanes coded per library call for codewords of ``K`` data shards (bounds the copies)."""
    return max(16, (_BATCH_BYTES // (4 * max(1, K))) // 16 * 16)


def reencode(
    data: NDArray[np.uint32], parity: NDArray[np.uint32], cols: NDArray[np.int64], lost_p: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Re-encode decoded lanes ``cols`` (``lost_p``: one row each), write their parity back.

    Returns which of them agree with the parity that survived.
    """
    K, M = data.shape[0], parity.shape[0]
    agree = np.ones(cols.size, dtype=np.bool_)
    if M == 0 or not cols.size:
        return agree
    step = lanes_per_call(K)
    for s in range(0, cols.size, step):
        c = cols[s : s + step]
        fresh = encode(np.ascontiguousarray(data[:, c]), M)
        agree[s : s + step] = np.all((fresh == parity[:, c]) | lost_p[s : s + step].T, axis=0)
        parity[:, c] = fresh
        release(data, parity)
    return agree


def decode(
    data: NDArray[np.uint32],
    parity: NDArray[np.uint32],
    lanes: NDArray[np.int64],
    lost_data: NDArray[np.bool_],
    lost_parity: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """Restore the lost data shards of ``lanes`` in place; return which of them decoded.

    ``data`` is ``[K, all lanes]`` and ``parity`` ``[M, all lanes]``.

    ``lost_data`` and ``lost_parity`` have one row per entry of ``lanes``. A lane
    decodes when at most M of its K + M shards are lost (the code is MDS).
    """
    M = parity.shape[0]
    nd, npar = lost_data.sum(axis=1), lost_parity.sum(axis=1)
    ok = (nd == 0) | (nd + npar <= M)
    todo = [int(i) for i in np.flatnonzero((nd > 0) & ok)]
    cap = min(4096, max(16, _BATCH_BYTES // (4 * max(1, data.shape[0]))))  # bounds the split copies
    # Greedy batching: lanes damaged at the same positions (contiguous attacks) share one call.
    i = 0
    while i < len(todo):
        rows = [todo[i]]
        ud, up = lost_data[todo[i]].copy(), lost_parity[todo[i]].copy()
        j = i + 1
        while j < len(todo) and len(rows) < cap:
            cd, cp = ud | lost_data[todo[j]], up | lost_parity[todo[j]]
            if int(cd.sum() + cp.sum()) > M:
                break
            ud, up = cd, cp
            rows.append(todo[j])
            j += 1
        _decode_batch(data, parity, lanes[np.array(rows)], ud, up)
        release(data, parity)
        i = j
    decoded: NDArray[np.bool_] = ok
    return decoded


def _decode_batch(
    data: NDArray[np.uint32],
    parity: NDArray[np.uint32],
    batch: NDArray[np.int64],
    lost_d: NDArray[np.bool_],
    lost_p: NDArray[np.bool_],
) -> None:
    K, M = data.shape[0], parity.shape[0]
    run = int(batch[-1]) - int(batch[0]) + 1 == batch.size and bool(np.all(np.diff(batch) == 1))
    cols: slice | NDArray[np.int64] = slice(int(batch[0]), int(batch[-1]) + 1) if run else batch
    d = _to_split(data[:, cols])
    p = _to_split(parity[:, cols])
    orig = {int(i): d[i].tobytes() for i in np.flatnonzero(~lost_d)}
    rec = {int(j): p[j].tobytes() for j in np.flatnonzero(~lost_p)}
    out = rsl.decode(K, M, orig, rec)
    idx = np.fromiter(out.keys(), dtype=np.int64, count=len(out))
    raw = np.frombuffer(b"".join(out[int(i)] for i in idx), dtype=np.uint8).reshape(len(idx), -1)
    if run:
        data[idx, cols] = _from_split(raw, batch.size)
    else:
        data[idx[:, None], batch[None, :]] = _from_split(raw, batch.size)


__all__ = ["decode", "encode", "encode_into", "lanes_per_call", "reencode"]
