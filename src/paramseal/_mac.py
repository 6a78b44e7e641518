"""Block authentication: a Wegman–Carter MAC with a 32-bit tag per block.

tag = (r_b * (H_k(block) + x_b * H_k'(block)) + s_b) mod p, with p = 2**32 - 5 (``MAC_NAME``).
Seals made before it used x_b = 0 (``MAC_V2``, no second hash) or x_b = 0 and r_b = 1
(``MAC_V1``); both still verify.

* H is the multilinear hash over 16-bit words, sum(k_i * m_i) mod p with k_i
  uniform in Z_p (64-bit keystream words mod p: each residue has probability
  at most 1/p + 2**-64). For two different blocks of the same length and any c,
  H(m) - H(m') = sum k_i (m_i - m'_i) equals c with probability at most
  1/p + 2**-64 (some m_i - m'_i is a nonzero residue, and H has no constant
  term), whatever the length: H is almost-delta-universal. Block lengths are fixed
  by the authenticated tensor table. k_i (HKDF label "mac-hash") and k'_i ("mac-hash2")
  are the key's alone, independent of each other.
* (s_b, r_b, x_b) come from AES-256 in counter mode, a PRF: two AES blocks per block under a
  nonce of their own ("pad3", the salt and the tensor; a 64-bit counter, 2 * block), whose
  first three 64-bit words are reduced to s_b, x_b uniform in Z_p and r_b uniform in 1..p-1
  (within 2**-59 of uniform each). `MAC_V2` took (s_b, r_b) from one AES block under "pad2",
  `MAC_V1` s_b alone under "pad"; the labels keep the streams apart (a model resealed with
  the same salt shares no pad with its older seal).

Write G_b(m) = H_k(m) + x_b H_k'(m) = sum (k_i + x_b k'_i) m_i: for a fixed x_b the weights
k_i + x_b k'_i are uniform, so G_b is almost-delta-universal as H is. A forger who does not hold
the key, changing block m into m' (d = m' - m) and tag T into T', needs r_b G_b(d) = T' - T:
for T' = T that is G_b(d) = 0. Where H_k'(d) != 0 it fixes x_b = -H_k(d) / H_k'(d): probability
<= 1/p + 2**-59, x_b being independent of all else the forger sees (block b's tag is masked by s_b,
other blocks have their own x). Where H_k'(d) = 0 it needs H_k(d) = 0 too: <= (1/p + 2**-64)**2 for
a d chosen without the keys (k, k' independent). Together <= 1/(p-1) + 2**-58. Otherwise
G_b(d) != 0 and r_b = (T' - T) / G_b(d) (<= 1/(p-1) + 2**-59, r_b being independent of the keys
and of x_b). So each guess succeeds with probability at most 1/(p-1) + 2**-58 + Adv_PRF(AES),
below 2**-32 + negligible per block, as before. What changed is what a verify report teaches.
A report names the failing blocks, so about p/N reports of an N-block model find one block b
where a guess passes. With `MAC_V1` (r_b = 1, x_b = 0) a passing tag change k_i * delta held in
every block of every model sealed with the key; `MAC_V2`'s r_b made a tag change the block's own,
but its hash keys are the key's alone, so an edit with sum k_i d_i = 0 mod p (its tag left as it
was) passed in every block of every model sealed with the key. Here such an edit satisfies
H_k(d) = -x_b H_k'(d), and passes at another block b' only where x_b' = x_b (x_b' fresh per salt,
tensor and block: ~1/p) or both sums vanish (given the pass at b, also ~1/p: a d passes at b with
~1/p and lies in both kernels with ~1/p**2). So an edit that passes everywhere takes about p**2/N
reports, not p/N (tests/test_mac.py: the edit found for one block passes in no other).
The tag bits themselves are zeroed before hashing, so changing them is detected too.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from ._kernels import mlh_tags
from .errors import BeyondSealError
from .keys import Key
from .levels import BLOCK

P = (1 << 32) - 5
#: The MAC new seals use: per-block hash weight x_b, multiplier r_b and pad s_b (see the module docstring).
MAC_NAME = "mlh2-p32*aes256ctr+aes256ctr"
#: The MAC of seals made before it, per-block multiplier and pad only: verified, never written.
MAC_V2 = "mlh-p32*aes256ctr+aes256ctr"
#: The MAC of seals made before that, additive pad only: verified, never written.
MAC_V1 = "mlh-p32+aes256ctr"
MACS = (MAC_V1, MAC_V2, MAC_NAME)
#: The most blocks of one tensor `MAC_V1` gives pads for: two a counter, a 4-byte counter (2**39 values).
V1_MAX_BLOCKS = 2 << 32
_MAX_WORDS = BLOCK * 8 // 2  # 64 values of up to 8 bytes, in 16-bit words
_PAD_GAP = 1024  # blocks between two wanted ones past which `pads_at` skips the keystream (32 KiB of AES)
_PAD_RUNS = 256  # runs `pads_at` makes a keystream for one at a time; more: one over the whole span


def _words(key: bytes, counter_block: bytes, n: int) -> NDArray[np.uint64]:
    """``n`` little-endian 64-bit words of AES-CTR keystream, written into a fresh array (no bytes copies)."""
    enc = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    buf = np.empty(n + 2, dtype="<u8")  # update_into wants a block's slack
    enc.update_into(np.zeros(8 * n, np.uint8).data, buf.data.cast("B"))
    return buf[:n]


class BlockMac:
    """The block MAC for one key; subkeys come from HKDF and never leave this object.

    ``mac`` is the header's ``mac`` field: `MAC_NAME` or, for an older seal, `MAC_V1`.
    """

    def __init__(self, key: Key, mac: str = MAC_NAME) -> None:
        if mac not in MACS:
            raise ValueError(f"unknown block MAC {mac!r}, expected one of {', '.join(map(repr, MACS))}")
        self._keys = (_words(key.derive("mac-hash"), bytes(16), _MAX_WORDS) % np.uint64(P)).astype(np.uint64)
        # the second hash's keys k'_i (MAC_NAME only; zeros otherwise, so the GPU engines need no second path)
        self._keys2 = np.zeros(_MAX_WORDS, np.uint64)
        if mac == MAC_NAME:
            self._keys2 = _words(key.derive("mac-hash2"), bytes(16), _MAX_WORDS) % np.uint64(P)
        self._pad_key = key.derive("mac-pad")
        self._mac = mac
        self._v1 = mac == MAC_V1

    @property
    def per_block_hash(self) -> bool:
        """Whether this MAC weights a second hash by a per-block x_b (`MAC_NAME`)."""
        return self._mac == MAC_NAME

    def pads(
        self, salt: bytes, tensor_index: int, nblocks: int, start: int = 0, *, name: str | None = None
    ) -> NDArray[np.uint64]:
        """Per-block constants for blocks ``[start, start + nblocks)`` of one tensor: ``[nblocks, 3]``, (s_b, r_b, x_b).

        x_b is 0 for the older MACs, which have no second hash. ``name``: the tensor's, for the refusal of an
        older seal's tensor past its counter (else its number).
        """
        if self._v1:  # 8 bytes a pad, 16 an AES block: start the counter at the AES block holding pad `start`
            if start + nblocks > V1_MAX_BLOCKS:  # its 4-byte counter would carry into the nonce
                which = f"tensor #{tensor_index}" if name is None else f"tensor '{name}'"
                raise BeyondSealError(
                    f"{which} reaches block {start + nblocks} ({BLOCK * (start + nblocks)} values), "
                    f"past what the older block MAC {MAC_V1!r} of its seal authenticates ({V1_MAX_BLOCKS} blocks, "
                    "2**39 values: its block counter is 4 bytes); reseal the model with the current MAC "
                    "('paramseal seal --reseal', from a copy you trust)"
                )
            nonce = hashlib.sha256(b"pad" + salt + tensor_index.to_bytes(4, "big")).digest()[:12]
            out = np.zeros((nblocks, 3), dtype=np.uint64)
            skip = start % 2
            ks = _words(self._pad_key, nonce + (start // 2).to_bytes(4, "big"), skip + nblocks)
            np.remainder(ks[skip:], np.uint64(P), out=out[:, 0])
            out[:, 1] = 1
            return out
        out = np.zeros((nblocks, 3), dtype=np.uint64)
        if self._mac == MAC_V2:  # one AES block a block: its two 64-bit words are s_b and r_b (a 64-bit counter)
            nonce = hashlib.sha256(b"pad2" + salt + tensor_index.to_bytes(4, "big")).digest()[:8]
            ks = _words(self._pad_key, nonce + start.to_bytes(8, "big"), 2 * nblocks).reshape(nblocks, 2)
        else:  # two AES blocks a block, under their own nonce label: s_b, r_b, x_b and a word left unused
            nonce = _nonce3(salt, tensor_index)
            ks = _words(self._pad_key, nonce + (2 * start).to_bytes(8, "big"), 4 * nblocks).reshape(nblocks, 4)
            np.remainder(ks[:, 2], np.uint64(P), out=out[:, 2])
        np.remainder(ks[:, 0], np.uint64(P), out=out[:, 0])
        np.remainder(ks[:, 1], np.uint64(P - 1), out=out[:, 1])
        out[:, 1] += np.uint64(1)
        return out

    def pads_at(
        self, salt: bytes, tensor_index: int, at: NDArray[np.int64], *, name: str | None = None
    ) -> NDArray[np.uint64]:
        """`pads` rows of blocks ``at`` only (any order, repeats allowed): ``pads(span)[at - lo]`` without the span.

        A few rebuilt blocks far apart in a large tensor (light damage) made pads for every block between them:
        runs more than ``_PAD_GAP`` blocks apart get a keystream each, up to ``_PAD_RUNS`` runs (else the span).
        """
        lo, hi = int(at.min()), int(at.max()) + 1
        uniq, inv = np.unique(at, return_inverse=True)
        cut = np.flatnonzero(np.diff(uniq) > _PAD_GAP) + 1
        if cut.size >= _PAD_RUNS or hi - lo <= 2 * _PAD_GAP:
            return self.pads(salt, tensor_index, hi - lo, lo, name=name)[at - lo]
        parts = []
        for run in np.split(uniq, cut):  # a call per run of nearby blocks, at most _PAD_RUNS of them
            first = int(run[0])
            parts.append(self.pads(salt, tensor_index, int(run[-1]) + 1 - first, first, name=name)[run - first])
        got: NDArray[np.uint64] = np.concatenate(parts)[inv.reshape(at.shape)]  # at's shape, as the span's
        return got

    def tag_runs(
        self, buf: NDArray[np.uint32], runs: NDArray[np.int64], wmask: NDArray[np.uint16], wshift: NDArray[np.uint64]
    ) -> bool:
        """Tag fp32 blocks where they lie in ``buf``, in place, as `tags` and `_bits.write_tags` would (compiled).

        ``runs``: ``[n, 4]`` rows (word offset in ``buf`` of the first block, `pad_nonce` of its tensor,
        first block, blocks), every block internal. False, ``buf`` untouched, for an older MAC, without
        the compiled library or where the CPU lacks VAES: the caller tags them with `tags`.
        """
        from . import _native_blocks  # imports _kernels, which this module's import is part of

        if self._mac != MAC_NAME:
            return False
        return _native_blocks.tag_runs(buf, runs, self._pad_key, self._keys, self._keys2, wmask, wshift)

    @staticmethod
    def pad_nonce(salt: bytes, tensor_index: int) -> int:
        """The first 8 bytes of a tensor's pad counter blocks (`MAC_NAME`), read little-endian, as an int64."""
        return int(np.frombuffer(_nonce3(salt, tensor_index), "<i8")[0])

    def tags(
        self,
        ub: NDArray[np.unsignedinteger],
        pads: NDArray[np.uint64],
        mask: NDArray[np.unsignedinteger] | None,
        internal: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.uint64]:
        """Tags of ``[nblocks, 64]`` values with their `pads` rows (s_b, r_b, x_b).

        ``mask`` marks the bits that hold the tag; they are left out of the hash
        in the blocks flagged ``internal`` (all blocks when None). Blocks whose
        tag is kept elsewhere are hashed whole.
        """
        nb = ub.shape[0]
        if nb == 0:  # no blocks, no tags (``reshape(0, -1)`` cannot infer a width)
            return np.zeros(0, dtype=np.uint64)
        words = np.ascontiguousarray(ub).view(np.uint16).reshape(nb, -1)
        if mask is None or not mask.any():
            wmask = np.zeros(0, dtype=np.uint16)
        else:
            wm = np.ascontiguousarray(mask).view(np.uint16)
            wmask = wm[: int(np.flatnonzero(wm).max()) + 1].copy()
        inside = np.ones(nb, dtype=np.bool_) if internal is None else internal
        keys2 = self._keys2 if self.per_block_hash else None  # the older MACs: one sum, x_b unread
        if pads.shape != (nb, 3 if keys2 is not None else pads.shape[1]) or pads.shape[1] < 2:
            raise ValueError(f"pads of shape {pads.shape} for {nb} blocks: expected rows (s_b, r_b, x_b)")
        return mlh_tags(words, self._keys, wmask, inside, pads, keys2)  # r_b = 1 in MAC_V1's pads


def _nonce3(salt: bytes, tensor_index: int) -> bytes:
    return hashlib.sha256(b"pad3" + salt + tensor_index.to_bytes(4, "big")).digest()[:8]


__all__ = ["MACS", "MAC_NAME", "MAC_V1", "MAC_V2", "P", "BlockMac"]
