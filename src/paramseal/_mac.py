"""Block authentication: a Wegman–Carter MAC with a 32-bit tag per block.

tag = (H_k(block) + F(salt, tensor, block)) mod p, with p = 2**32 - 5.

* H is the multilinear hash over 16-bit words, sum(k_i * m_i) mod p with k_i
  uniform in Z_p (64-bit keystream words mod p: each residue has probability
  at most 1/p + 2**-64). For two different blocks of the same length and any c,
  H(m) - H(m') = sum k_i (m_i - m'_i) equals c with probability at most
  1/p + 2**-64 (some m_i - m'_i is a nonzero residue, and H has no constant
  term), whatever the length: H is almost-delta-universal, the property a
  Wegman–Carter tag with an additive pad needs (almost-universal alone is not
  enough). Block lengths are fixed by the authenticated tensor table.
* F is AES-256 in counter mode, a PRF, with a counter block unique to the seal
  salt and tensor, so every block gets a fresh one-time pad (a 64-bit keystream
  word mod p: within statistical distance 25 * 2**-64 < 2**-59 of uniform).

A forger who does not hold the key therefore succeeds with probability at most
1/p + 2**-58 + Adv_PRF(AES) per block, which is below 2**-32 + negligible. The tag bits
themselves are zeroed before hashing, so changing them is detected too. The
same salt ties blocks to one seal: a block copied from another model sealed
with the same key gets a different pad.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from ._kernels import mlh_tags
from .keys import Key
from .levels import BLOCK

P = (1 << 32) - 5
_MAX_WORDS = BLOCK * 8 // 2  # 64 values of up to 8 bytes, in 16-bit words


def _stream(key: bytes, counter_block: bytes, nbytes: int) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


class BlockMac:
    """The block MAC for one key; subkeys come from HKDF and never leave this object."""

    def __init__(self, key: Key) -> None:
        raw = np.frombuffer(_stream(key.derive("mac-hash"), bytes(16), 8 * _MAX_WORDS), dtype="<u8")
        self._keys = (raw % np.uint64(P)).astype(np.uint64)
        self._pad_key = key.derive("mac-pad")

    def pads(self, salt: bytes, tensor_index: int, nblocks: int, start: int = 0) -> NDArray[np.uint64]:
        """One-time pads for blocks ``[start, start + nblocks)`` of one tensor (AES-CTR keystream, mod p)."""
        nonce = hashlib.sha256(b"pad" + salt + tensor_index.to_bytes(4, "big")).digest()[:12]
        # 8 bytes a pad, 16 an AES block: start the counter at the AES block holding pad `start`
        skip = 8 * (start % 2)
        raw = _stream(self._pad_key, nonce + (start // 2).to_bytes(4, "big"), skip + 8 * nblocks)
        ks = np.frombuffer(raw, dtype="<u8", offset=skip)
        pads: NDArray[np.uint64] = (ks % np.uint64(P)).astype(np.uint64)
        return pads

    def tags(
        self,
        ub: NDArray[np.unsignedinteger],
        pads: NDArray[np.uint64],
        mask: NDArray[np.unsignedinteger] | None,
        internal: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.uint64]:
        """Tags of ``[nblocks, 64]`` values.

        ``mask`` marks the bits that hold the tag; they are left out of the hash
        in the blocks flagged ``internal`` (all blocks when None). Blocks whose
        tag is kept elsewhere are hashed whole.
        """
        nb = ub.shape[0]
        words = np.ascontiguousarray(ub).view(np.uint16).reshape(nb, -1)
        if mask is None or not mask.any():
            wmask = np.zeros(0, dtype=np.uint16)
        else:
            wm = np.ascontiguousarray(mask).view(np.uint16)
            wmask = wm[: int(np.flatnonzero(wm).max()) + 1].copy()
        inside = np.ones(nb, dtype=np.bool_) if internal is None else internal
        return mlh_tags(words, self._keys, wmask, inside, pads)


__all__ = ["P", "BlockMac"]
