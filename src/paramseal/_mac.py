"""Block authentication: a Wegman–Carter MAC with a 32-bit tag per block.

tag = (r_b * H_k(block) + s_b) mod p, with p = 2**32 - 5 (``MAC_NAME``; seals made before it
used r_b = 1, ``MAC_V1``, and still verify).

* H is the multilinear hash over 16-bit words, sum(k_i * m_i) mod p with k_i
  uniform in Z_p (64-bit keystream words mod p: each residue has probability
  at most 1/p + 2**-64). For two different blocks of the same length and any c,
  H(m) - H(m') = sum k_i (m_i - m'_i) equals c with probability at most
  1/p + 2**-64 (some m_i - m'_i is a nonzero residue, and H has no constant
  term), whatever the length: H is almost-delta-universal. Block lengths are fixed
  by the authenticated tensor table.
* (s_b, r_b) come from AES-256 in counter mode, a PRF, with a counter block unique to
  the seal salt, tensor and block: s_b uniform in Z_p, r_b uniform in 1..p-1 (64-bit
  keystream words reduced: within 2**-59 of uniform each).

A forger who does not hold the key, changing block m into m' and tag T into T', needs
r_b (H(m') - H(m)) = T' - T: for T' = T that is H(m') = H(m) (probability <= 1/p + 2**-64),
otherwise H(m') != H(m) and r_b = (T' - T) / (H(m') - H(m)) (<= 1/(p-1) + 2**-59, r_b being
independent of k). So each guess succeeds with probability at most 1/(p-1) + 2**-58 + Adv_PRF(AES),
below 2**-32 + negligible per block. r_b is why a verify report does not become a forgery
kit: with r_b = 1 (``MAC_V1``) the tag change of an edit is k_i * delta in every block, so one
block found passing in a report told it for every block of every model sealed with the key;
now it is r_b * k_i * delta, and r_b is fresh per salt, tensor and block. That confines edits that
change the tag, not edits H cannot see: H's keys k_i are the key's alone, so an edit with
sum k_i delta_i = 0 mod p, found passing in one block with its tag left as it was (the same
~p/N report guesses), passes in every block of every model sealed with the key, either MAC
(tests/test_mac.py shows one that doubles a value). Confining it takes per-block hash keys
(say H_k + x_b * H_k', x_b fresh per block): a new MAC name. The tag bits
themselves are zeroed before hashing, so changing them is detected too.
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
#: The MAC new seals use: a per-block multiplier and pad (see the module docstring).
MAC_NAME = "mlh-p32*aes256ctr+aes256ctr"
#: The MAC of seals made before it, additive pad only: verified, never written.
MAC_V1 = "mlh-p32+aes256ctr"
MACS = (MAC_V1, MAC_NAME)
#: The most blocks of one tensor `MAC_V1` gives pads for: two a counter, a 4-byte counter (2**39 values).
V1_MAX_BLOCKS = 2 << 32
_MAX_WORDS = BLOCK * 8 // 2  # 64 values of up to 8 bytes, in 16-bit words


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
        self._pad_key = key.derive("mac-pad")
        self._v1 = mac == MAC_V1

    def pads(
        self, salt: bytes, tensor_index: int, nblocks: int, start: int = 0, *, name: str | None = None
    ) -> NDArray[np.uint64]:
        """Per-block constants for blocks ``[start, start + nblocks)`` of one tensor: ``[nblocks, 2]``, (s_b, r_b).

        ``name``: the tensor's, for the refusal of an older seal's tensor past its counter (else its number).
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
            skip = start % 2
            ks = _words(self._pad_key, nonce + (start // 2).to_bytes(4, "big"), skip + nblocks)
            out = np.empty((nblocks, 2), dtype=np.uint64)
            np.remainder(ks[skip:], np.uint64(P), out=out[:, 0])
            out[:, 1] = 1
            return out
        # one AES block a block: its two 64-bit words are s_b and r_b (a 64-bit counter: no wrap)
        nonce = hashlib.sha256(b"pad2" + salt + tensor_index.to_bytes(4, "big")).digest()[:8]
        out = _words(self._pad_key, nonce + start.to_bytes(8, "big"), 2 * nblocks).reshape(nblocks, 2)
        np.remainder(out[:, 0], np.uint64(P), out=out[:, 0])
        np.remainder(out[:, 1], np.uint64(P - 1), out=out[:, 1])
        out[:, 1] += np.uint64(1)
        return out

    def tags(
        self,
        ub: NDArray[np.unsignedinteger],
        pads: NDArray[np.uint64],
        mask: NDArray[np.unsignedinteger] | None,
        internal: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.uint64]:
        """Tags of ``[nblocks, 64]`` values with their `pads` rows (s_b, r_b).

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
        return mlh_tags(words, self._keys, wmask, inside, pads)  # r_b = 1 in MAC_V1's pads


__all__ = ["MACS", "MAC_NAME", "MAC_V1", "P", "BlockMac"]
