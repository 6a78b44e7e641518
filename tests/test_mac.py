"""The block MAC: exact arithmetic against a big-integer reference, and what each tag depends on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

import paramseal
from paramseal import _kernels
from paramseal._mac import MAC_NAME, MAC_V1, MAC_V2, MACS, BlockMac, P


def _pads(
    s: NDArray[np.uint64], r: NDArray[np.uint64] | int = 1, x: NDArray[np.uint64] | int = 0
) -> NDArray[np.uint64]:
    """`BlockMac.pads`' rows (s_b, r_b, x_b) from given values."""
    out = np.empty((s.size, 3), np.uint64)
    out[:, 0], out[:, 1], out[:, 2] = s, r, x
    return out


def _hash_keys(mac: BlockMac, dtype: type, nw: int, x: int = 0) -> list[int]:
    """Recover every k_i black-box: with a zero pad the tag of the unit vector e_i is k_i (k_i + x k'_i if x_b = x)."""
    per = np.dtype(dtype).itemsize // 2
    ub = np.zeros((nw, 64), dtype=dtype)
    words = ub.view(np.uint16).reshape(nw, 64 * per)
    words[np.arange(nw), np.arange(nw)] = 1
    return [int(x) for x in mac.tags(ub, _pads(np.zeros(nw, np.uint64), 1, x), None)]


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.uint16, np.uint32, np.uint64]), extreme=st.booleans())
def test_block_hash_is_exact_multilinear_arithmetic_mod_p(seed: int, dtype: type, extreme: bool) -> None:
    """tag(m) = r * sum(k_i * m_i) + s mod p, computed exactly (no float rounding, no uint64 overflow)."""
    mac = BlockMac(paramseal.Key(seed.to_bytes(4, "little") * 8))
    nw = 64 * np.dtype(dtype).itemsize // 2
    k = _hash_keys(mac, dtype, nw)
    assert all(0 <= x < P for x in k) and len(set(k)) > nw - 2
    rng = np.random.default_rng(seed)
    ub = rng.integers(0, np.iinfo(dtype).max, size=(4, 64), dtype=dtype, endpoint=True)
    if extreme:
        ub[0] = np.iinfo(dtype).max  # the largest possible sums
        ub[1] = 0
    s = rng.integers(0, P, size=4, dtype=np.uint64)
    r = rng.integers(1, P, size=4, dtype=np.uint64)
    if extreme:
        s[0], r[0] = P - 1, P - 1  # the largest product and sum
    words = ub.view(np.uint16).reshape(4, nw)
    want = [(int(r[b]) * sum(k[i] * int(w[i]) for i in range(nw)) + int(s[b])) % P for b, w in enumerate(words)]
    assert mac.tags(ub, _pads(s, r), None).tolist() == want
    v1 = BlockMac(paramseal.Key(seed.to_bytes(4, "little") * 8), MAC_V1)  # older seals: no multiplier
    additive = [(sum(k[i] * int(w[i]) for i in range(nw)) + int(s[b])) % P for b, w in enumerate(words)]
    assert v1.tags(ub, _pads(s), None).tolist() == additive
    # the current MAC's second hash: tag = r (H_k + x H_k') + s; the older two read no x_b
    x = rng.integers(0, P, size=4, dtype=np.uint64)
    if extreme:
        x[0] = P - 1
    k2 = [(a - b) % P for a, b in zip(_hash_keys(mac, dtype, nw, 1), k, strict=True)]
    assert all(0 <= v < P for v in k2) and len(set(k2)) > nw - 2 and k2 != k
    h2 = [sum(k2[i] * int(w[i]) for i in range(nw)) for w in words]
    want = [(int(r[b]) * (sum(k[i] * int(w[i]) for i in range(nw)) + int(x[b]) * h2[b]) + int(s[b])) % P
            for b, w in enumerate(words)]  # fmt: skip
    assert mac.tags(ub, _pads(s, r, x), None).tolist() == want
    v2 = BlockMac(paramseal.Key(seed.to_bytes(4, "little") * 8), MAC_V2)
    assert _hash_keys(v2, dtype, nw, 1) == k
    mult = [(int(r[b]) * sum(k[i] * int(w[i]) for i in range(nw)) + int(s[b])) % P for b, w in enumerate(words)]
    assert v2.tags(ub, _pads(s, r, x), None).tolist() == mult


def test_block_hash_is_exact_for_many_blocks(key: paramseal.Key) -> None:
    mac = BlockMac(key)
    k = _hash_keys(mac, np.uint32, 128)
    rng = np.random.default_rng(1)
    ub = rng.integers(0, 2**32, size=(20000, 64), dtype=np.uint32)
    got = mac.tags(ub, _pads(np.zeros(ub.shape[0], np.uint64)), None)
    words = ub.view(np.uint16).reshape(ub.shape[0], 128)
    for b in (0, 1, 8191, 8192, 8193, 16384, 19999):
        assert int(got[b]) == sum(k[i] * int(words[b, i]) for i in range(128)) % P, b


def test_tags_are_below_p_and_depend_on_key_salt_tensor_and_position(
    key: paramseal.Key, other_key: paramseal.Key
) -> None:
    ub = np.zeros((4, 64), dtype=np.uint32)  # four identical blocks
    salt = bytes(16)
    mac = BlockMac(key)
    t = mac.tags(ub, mac.pads(salt, 0, 4), None)
    assert (t < P).all()
    assert len(set(t.tolist())) == 4, "identical blocks at different positions must get different tags"
    assert not np.array_equal(t, mac.tags(ub, mac.pads(b"\1" + bytes(15), 0, 4), None))
    assert not np.array_equal(t, mac.tags(ub, mac.pads(salt, 1, 4), None))
    m2 = BlockMac(other_key)
    assert not np.array_equal(t, m2.tags(ub, m2.pads(salt, 0, 4), None))
    assert np.array_equal(t, BlockMac(key).tags(ub, mac.pads(salt, 0, 4), None))


@given(pos=st.integers(0, 63), bit=st.integers(0, 31))
def test_any_single_bit_outside_the_tag_changes_the_tag(key: paramseal.Key, pos: int, bit: int) -> None:
    mac = BlockMac(key)
    rng = np.random.default_rng(pos * 32 + bit)
    ub = rng.integers(0, 2**32, size=(1, 64), dtype=np.uint32)
    pads = mac.pads(bytes(16), 3, 1)
    mask = np.zeros(64, dtype=np.uint32)
    mask[:4] = 0xFF  # k = 8: the tag lives in the low byte of values 0..3
    before = mac.tags(ub, pads, mask)
    x = ub.copy()
    x[0, pos] ^= np.uint32(1 << bit)
    after = mac.tags(x, pads, mask)
    in_tag = pos < 4 and bit < 8
    assert (before == after).all() == in_tag


def test_internal_flag_decides_whether_tag_bits_are_hashed(key: paramseal.Key) -> None:
    mac = BlockMac(key)
    ub = np.zeros((2, 64), dtype=np.uint16)
    ub[:, 0] = 1  # a tag bit
    pads = mac.pads(bytes(16), 0, 2)
    mask = np.zeros(64, dtype=np.uint16)
    mask[:16] = 0b11
    zero = mac.tags(np.zeros_like(ub), pads, mask)
    both_internal = mac.tags(ub, pads, mask, np.array([True, True]))
    assert np.array_equal(both_internal, zero)
    mixed = mac.tags(ub, pads, mask, np.array([True, False]))
    assert mixed[0] == zero[0] and mixed[1] != zero[1]


@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="numba not installed: only the numpy path exists")
@given(seed=st.integers(0, 2**32 - 1), nw=st.sampled_from([64, 128, 256]), nmask=st.integers(0, 32), two=st.booleans())
def test_compiled_and_numpy_hash_agree(seed: int, nw: int, nmask: int, two: bool) -> None:
    """The compiled library, numba (serial and threaded) and numpy give the same tags, with the second hash or not."""
    from paramseal import _native_blocks

    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**16, size=(50, nw), dtype=np.uint16)
    words[0] = 0xFFFF  # the largest sums
    keys = rng.integers(0, P, size=256, dtype=np.uint64)
    keys2 = rng.integers(0, P, size=256, dtype=np.uint64) if two else None
    wmask = rng.integers(0, 2**16, size=nmask, dtype=np.uint16)
    internal = rng.integers(0, 2, size=50).astype(bool)
    pads = rng.integers(0, P, size=(50, 3), dtype=np.uint64)
    pads[0] = P - 1  # the largest products
    slow = _kernels.mlh_tags_numpy(words, keys, wmask, internal, pads, keys2)
    assert np.array_equal(_kernels.mlh_tags(words, keys, wmask, internal, pads, keys2), slow)
    k2 = np.zeros(0, np.uint64) if keys2 is None else keys2[:nw]
    for kernel in (_kernels._SER["mlh"], _kernels._PAR["mlh"]):
        out = np.empty(50, np.uint64)
        kernel(words, keys[:nw], k2, wmask, internal, pads, out)
        assert np.array_equal(out, slow)
    compiled = np.empty(50, np.uint64)
    if _native_blocks.mlh(words, keys, wmask, internal, pads, compiled, keys2):
        assert np.array_equal(compiled, slow)
    if keys2 is not None:  # x_b weighs the second sum: without it the tags differ
        assert not np.array_equal(slow, _kernels.mlh_tags_numpy(words, keys, wmask, internal, pads))


@pytest.mark.parametrize("start", [1, 2, 3, 6, 7])
def test_the_pads_of_a_later_chunk_are_the_same_blocks_pads_as_from_the_start(start: int) -> None:
    """Verify reads a large tensor a chunk at a time: pads from block ``start`` (odd or even, half an AES block
    in) must be the pads of those very blocks, or an intact tensor fails past its first chunk."""
    mac = BlockMac(paramseal.Key(bytes(range(32))))
    whole = mac.pads(b"s" * 16, 3, start + 9)
    assert np.array_equal(mac.pads(b"s" * 16, 3, 9, start), whole[start:])
    assert not np.array_equal(mac.pads(b"s" * 16, 3, 9, start), whole[:9])  # each block its own pad


def test_a_tensor_verified_in_odd_sized_chunks_is_intact_and_a_flip_is_located(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of 3 blocks (starting at odd and even blocks) verify as the whole tensor does."""
    from paramseal import _pages

    key = paramseal.Key(bytes(range(32)))
    w = {"w": np.random.default_rng(5).standard_normal(64 * 20).astype(np.float32)}
    sealed = paramseal.seal(w, key)
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 64 * 4 * 3)
    assert paramseal.verify(sealed.tensors, key, sealed.header_json).status == "intact"
    bad = {"w": sealed.tensors["w"].copy()}
    bad["w"].view(np.uint32)[64 * 7 + 5] ^= 1 << 20
    r = paramseal.verify(bad, key, sealed.header_json)
    assert r.status == "tampered" and r.tensors["w"].tampered_blocks == (7,)


def test_a_last_block_with_its_tag_in_the_header_verifies_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A last block too short to hold its tag keeps it in the header (external_tags). Read a chunk at a time,
    a chunk takes the header tags of its own external blocks (counted before it), not the ones at its block
    numbers, or an intact tensor fails in its last chunk."""
    from paramseal import _pages
    from paramseal.header import parse_header

    key = paramseal.Key(bytes(range(32)))
    w = {"w": np.random.default_rng(6).standard_normal(64 * 20 + 2).astype(np.float32)}
    sealed = paramseal.seal(w, key)
    ext = parse_header(sealed.header_json, key).external_tags
    assert list(ext) == [0] and ext[0].size == 1  # only block 20, the two-value last one, keeps it outside
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 64 * 4 * 3)
    assert paramseal.verify(sealed.tensors, key, sealed.header_json).status == "intact"
    bad = {"w": sealed.tensors["w"].copy()}
    bad["w"].view(np.uint32)[64 * 20 + 1] ^= 1
    r = paramseal.verify(bad, key, sealed.header_json)
    assert r.status == "tampered" and r.tensors["w"].tampered_blocks == (20,)


@pytest.mark.parametrize("mac_name", MACS)
def test_pads_are_residues_and_multipliers_nonzero(key: paramseal.Key, mac_name: str) -> None:
    pads = BlockMac(key, mac_name).pads(bytes(16), 0, 5000)
    assert pads.shape == (5000, 3) and (pads[:, 0] < P).all()
    if mac_name == MAC_V1:
        assert (pads[:, 1] == 1).all()
    else:
        assert (pads[:, 1] >= 1).all() and (pads[:, 1] < P).all() and len(set(pads[:, 1].tolist())) == 5000
    if mac_name == MAC_NAME:  # x_b: a residue of its own per block, from its own stream
        assert (pads[:, 2] < P).all() and len(set(pads[:, 2].tolist())) == 5000
        older = BlockMac(key, MAC_V2).pads(bytes(16), 0, 5000)
        assert not np.isin(pads[:, :2], older[:, :2]).any()
    else:
        assert (pads[:, 2] == 0).all()


def _tag_change(mac: BlockMac, salt: bytes, block: int, ub: NDArray[np.uint32], edited: NDArray[np.uint32]) -> int:
    """What a forger must add to block ``block``'s tag for ``edited`` to pass where ``ub`` did."""
    pads = mac.pads(salt, 0, 1, block)
    return (int(mac.tags(edited, pads, None)[0]) - int(mac.tags(ub, pads, None)[0])) % P


def test_a_tag_change_found_for_one_block_does_not_carry_to_other_blocks_or_models(key: paramseal.Key) -> None:
    """A verify report names the blocks that fail, so a forger who puts one edit with many guesses at its tag
    change into many blocks learns, from the one block that passes, that block's tag change. With an additive
    pad only (MAC_V1) that change was k_i * delta everywhere: it then passed in every block of every model
    sealed with the key. The per-block multiplier r_b makes it block's own."""
    rng = np.random.default_rng(3)
    ub = rng.integers(0, 2**32, size=(1, 64), dtype=np.uint32)
    other = rng.integers(0, 2**32, size=(1, 64), dtype=np.uint32)
    delta = np.zeros_like(ub)
    delta[0, 9] = 1 << 30  # one edit: set an exponent bit, clear in both blocks (so the same change of word)
    ub &= ~delta
    other &= ~delta
    for name, carries in ((MAC_V1, True), (MAC_V2, False), (MAC_NAME, False)):
        mac = BlockMac(key, name)
        learned = _tag_change(mac, b"a" * 16, 5, ub, ub ^ delta)
        elsewhere = [
            _tag_change(mac, b"a" * 16, 6, other, other ^ delta),  # another block of the model
            _tag_change(mac, b"b" * 16, 5, ub, ub ^ delta),  # the same block of another model sealed with the key
        ]
        assert all(c == learned for c in elsewhere) == carries, name


def _kernel_edit(k: list[int], words: list[int], first: int, room: int = 2048) -> dict[int, int]:
    """Small changes of ``words`` (``first`` for the first) with sum k_i * change_i = 0 mod p: an edit H cannot see.

    What about p/N report guesses find black-box (a block that passes with its tag left as it was); here solved
    from the keys. Three words of changes in [-room, room) leave about room**3 / p * 2 * room solutions.
    """
    a, b, c, d = (np.uint64(k[w]) for w in words)
    r = np.arange(-room, room, dtype=np.int64)
    x, y = (g.astype(np.uint64) for g in np.meshgrid(r % P, r % P, indexing="ij"))
    pu = np.uint64(P)

    def mulmod(u: NDArray[np.uint64], v: np.uint64) -> NDArray[np.uint64]:  # u, v < 2**32: no uint64 overflow
        hi, lo = np.uint64(int(v) >> 16), np.uint64(int(v) & 0xFFFF)
        return ((u * hi % pu) * np.uint64(1 << 16) + u * lo) % pu

    acc = (np.uint64(int(a) * first % P) + mulmod(x, b) + mulmod(y, c)) % pu
    z = mulmod((pu - acc) % pu, np.uint64(pow(int(d), P - 2, P))).astype(np.int64)
    z = np.where(z > P // 2, z - P, z)
    hit = np.flatnonzero(np.abs(z) < room)
    assert hit.size, "no small solution: widen room"
    i = int(hit[0])
    return dict(zip(words, (first, int(r[i // r.size]), int(r[i % r.size]), int(z.flat[i])), strict=True))


def _doubling(edit: dict[int, int], rng: np.random.Generator) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """A random block and the block with ``edit`` applied, which doubles value 20 (its exponent + 1)."""
    ub = rng.integers(0, 2**32, size=(1, 64), dtype=np.uint32)
    words = ub.view(np.uint16).reshape(-1).astype(np.int64)
    words[[2 * 30, 2 * 31, 2 * 32]] = 1 << 15  # room for the changes either way
    words[2 * 20 + 1] = 0x3F00  # value 20 is 0.5 and some mantissa: +0x80 in its high word doubles it
    ub = words.astype(np.uint16).view(np.uint32).reshape(1, 64)
    edited = (words + np.array([edit.get(i, 0) for i in range(128)])).astype(np.uint16).view(np.uint32)
    edited = edited.reshape(1, 64)
    assert edited.view(np.float32)[0, 20] == 2 * ub.view(np.float32)[0, 20]
    return ub, edited


_EDIT_WORDS = [2 * 20 + 1, 2 * 30, 2 * 31, 2 * 32]


@pytest.mark.parametrize("name", [MAC_V1, MAC_V2])
def test_an_edit_that_keeps_the_tag_found_for_one_block_carries_to_every_block_and_model_under_the_older_macs(
    key: paramseal.Key, name: str
) -> None:
    """Why the current MAC has a per-block hash (README, 'Authenticate'): under the older two, r_b confines an edit
    that changes the tag, not one H itself cannot see. H's keys are the key's alone, so an edit found passing in
    one block with its tag untouched passes in every block of every model sealed with the key. Here it doubles a
    value (its exponent + 1) and hides the change in the low mantissa bits of three others."""
    mac = BlockMac(key, name)
    edit = _kernel_edit(_hash_keys(mac, np.uint32, 128), _EDIT_WORDS, 0x0080)
    rng = np.random.default_rng(4)
    for salt, block in ((b"a" * 16, 5), (b"a" * 16, 6), (b"b" * 16, 5)):
        ub, edited = _doubling(edit, rng)
        assert _tag_change(mac, salt, block, ub, edited) == 0, (name, salt, block)


def test_an_edit_that_keeps_the_tag_found_for_one_block_passes_in_no_other_block_or_model(key: paramseal.Key) -> None:
    """The current MAC hashes block b with H_k + x_b H_k', x_b fresh per salt, tensor and block: an edit that
    passes in one block with its tag untouched (H_k(d) + x_b H_k'(d) = 0, solved here from that block's hash
    keys, as ~p/N report guesses would find it) passes in another block only where x_b' = x_b (or both sums
    vanish): ~1/p each. Under MAC_V2 the same search gave an edit passing in all of them (test above)."""
    mac = BlockMac(key, MAC_NAME)
    pads = mac.pads(b"a" * 16, 0, 1, 5)
    edit = _kernel_edit(_hash_keys(mac, np.uint32, 128, int(pads[0, 2])), _EDIT_WORDS, 0x0080)
    rng = np.random.default_rng(4)
    ub, edited = _doubling(edit, rng)
    assert _tag_change(mac, b"a" * 16, 5, ub, edited) == 0  # it does pass where it was found
    passed = []
    for salt in (b"a" * 16, b"b" * 16):
        for block in range(0, 300):
            if (salt, block) != (b"a" * 16, 5):
                ub, edited = _doubling(edit, rng)
                passed += [(salt, block)] if _tag_change(mac, salt, block, ub, edited) == 0 else []
    assert passed == []  # 599 blocks: ~599/p expected to pass


def test_the_older_mac_refuses_a_tensor_past_its_4_byte_counter_instead_of_wrapping() -> None:
    """MAC_V1 packs its AES-CTR block counter in 4 bytes: pads past 2**33 blocks (2**39 values) carried into the
    nonce, or raised OverflowError (a traceback), where they should be refused with a reason."""
    from paramseal._mac import V1_MAX_BLOCKS
    from paramseal.errors import UsageError

    v1 = BlockMac(paramseal.Key(bytes(range(32))), MAC_V1)
    last = v1.pads(b"salt" * 4, 3, 2, start=V1_MAX_BLOCKS - 2)  # the last two blocks it covers
    assert last.shape == (2, 3) and (last[:, 1] == 1).all()
    for start, n in ((V1_MAX_BLOCKS - 1, 2), (V1_MAX_BLOCKS, 1), (1 << 34, 1), (0, V1_MAX_BLOCKS + 1)):
        with pytest.raises(UsageError, match=r"tensor #3 .*older block MAC 'mlh-p32\+aes256ctr'.*--reseal"):
            v1.pads(b"salt" * 4, 3, n, start=start)  # refused before any keystream is made (no 64 GiB array)
    assert BlockMac(paramseal.Key(bytes(range(32)))).pads(b"salt" * 4, 3, 1, start=1 << 34).shape == (1, 3)
    with pytest.raises(UsageError, match=r"^tensor 'enc\.weight' reaches block"):  # named where its name is known
        v1.pads(b"salt" * 4, 3, 1, start=V1_MAX_BLOCKS, name="enc.weight")


def test_verify_of_an_older_mac_seal_past_its_counter_is_exit_3_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    import helpers

    from paramseal import _mac

    golden = Path(__file__).parent / "golden" / "v1"
    monkeypatch.setattr(_mac, "V1_MAX_BLOCKS", 1)  # as if its tensors were 2**39 values
    rc, out, err = helpers.run_cli(["verify", golden / "sealed.safetensors", "--key", golden / "golden.key"])
    assert rc == 3 and out == "" and "Traceback" not in err, err
    assert "error: tensor 'position_ids' reaches block 2 (128 values), past what the older block MAC" in err, err
    assert "past what the older block MAC 'mlh-p32+aes256ctr' of its seal authenticates" in err, err
    assert err.rstrip().endswith("with the current MAC ('paramseal seal --reseal', from a copy you trust)"), err


@pytest.mark.parametrize("sharded", [False, True])
def test_an_older_mac_tensor_past_its_counter_is_named_escaped_and_exit_3_in_a_sharded_verify_too(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch, sharded: bool
) -> None:
    """The refusal named the tensor 'tensor #N'; and in a sharded verify or recover it became a finding of the set
    ('shard ... cannot be verified', exit 2, tampering), where a single file is exit 3: it is a refusal of an authentic
    seal this version cannot check, so the same exit 3 with the reason, the tensor's name escaped."""
    import helpers

    from paramseal import _mac, _shard_pool

    rng = np.random.default_rng(3)
    odd = "w\x1b[2J\rOK"
    model = {odd: helpers.random_tensor(rng, np.float32, (64, 64)), "b": helpers.random_tensor(rng, np.float32, (64,))}
    if sharded:
        src = helpers.write_checkpoint(tmp_path / "ckpt", {"a.safetensors": model, "c.safetensors": {"c": model["b"]}})
        out = tmp_path / "sealed"
    else:
        src, out = helpers.write_st(tmp_path / "m.safetensors", model), tmp_path / "s.safetensors"
    assert helpers.run_cli(["seal", src, out, "--key", key_file])[0] == 0
    monkeypatch.setattr(_mac, "MAC_V1", MAC_NAME)  # read as sealed with the older MAC (its pads: every block fails)
    monkeypatch.setattr(_mac, "V1_MAX_BLOCKS", 1)  # as if its tensors were 2**39 values
    monkeypatch.setattr(_shard_pool, "_workers", lambda n: 1)  # in this process, where the patches hold
    fixed = tmp_path / ("r" if sharded else "r.safetensors")
    for argv in (["verify", out], ["verify", out, "--json"], ["recover", out, fixed, "--allow-partial"]):
        rc, stdout, err = helpers.run_cli([*argv, "--key", key_file])
        assert rc == 3 and "Traceback" not in err and "\x1b" not in err and "\r" not in err, (argv, ascii(err))
        assert "error: tensor 'w\\x1b[2J\\rOK' reaches block 64 (4096 values), past what the older block MAC" in err
        assert not fixed.exists()
        if "--json" in argv:
            assert json.loads(stdout)["exit_code"] == 3


@pytest.mark.parametrize("mac_name", MACS)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_tags_of_zero_blocks_is_empty(mac_name: str, dtype: type) -> None:
    """No blocks, no tags (and no error): `tags` of a ``[0, 64]`` batch, its mask set or not, is an empty array."""
    mac = BlockMac(paramseal.Key(bytes(32)), mac_name)
    ub = np.zeros((0, 64), dtype=dtype)
    pads = mac.pads(b"s" * 16, 0, 0)
    assert pads.shape == (0, 3)
    for mask in (None, np.array(0xFF, dtype=dtype)):
        got = mac.tags(ub, pads, mask, np.zeros(0, np.bool_))
        assert got.dtype == np.uint64 and got.shape == (0,)


@pytest.mark.parametrize("name", MACS)
def test_pads_of_chosen_blocks_equal_the_span_keystream_without_making_it(name: str, monkeypatch) -> None:
    """A few rebuilt blocks far apart: their pads, as the span's, yet only the blocks near them are derived."""
    from paramseal import _mac

    mac = BlockMac(paramseal.Key(bytes(range(32))), name)
    salt, rng = bytes(16), np.random.default_rng(3)
    span = 300_000
    whole = mac.pads(salt, 4, span, 0)
    made: list[int] = []
    pads = mac.pads

    def counting(salt: bytes, t: int, n: int, start: int = 0, **kw: object) -> NDArray[np.uint64]:
        made.append(n)
        return pads(salt, t, n, start, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mac, "pads", counting)
    cases = [
        np.array([span - 1, 7, 150_000, 7, 8]),  # unsorted, a repeat, runs far apart
        rng.integers(0, span, 40),
        rng.integers(0, span, 2000),  # past _PAD_RUNS runs: one keystream over the span
        np.arange(1000, 1500),  # dense: the span
        np.array([123]),
    ]
    for at in cases:
        made.clear()
        np.testing.assert_array_equal(mac.pads_at(salt, 4, at.astype(np.int64)), whole[at])
    made.clear()
    mac.pads_at(salt, 4, np.array([0, span - 1]))
    assert sum(made) == 2  # two blocks, two pads: not the 300,000 between them
    made.clear()
    many = np.arange(0, span, _mac._PAD_GAP + 1)  # more runs than _PAD_RUNS: one keystream over them all
    assert many.size > _mac._PAD_RUNS
    mac.pads_at(salt, 4, many)
    assert made == [int(many[-1]) + 1]


@pytest.mark.parametrize("name", MACS)
def test_pads_of_chosen_blocks_keep_the_shape_of_at(name: str) -> None:
    """``pads_at`` is ``pads(span)[at - lo]``: a 2-D ``at`` (int32 too) gives ``[*at.shape, 3]`` on either path."""
    mac = BlockMac(paramseal.Key(bytes(range(32))), name)
    salt = bytes(16)
    whole = mac.pads(salt, 1, 200_000, 0)
    for at in (np.array([[5, 100_000], [7, 150_000]]), np.array([[5, 6], [9, 8]], np.int32)):  # runs, span
        np.testing.assert_array_equal(mac.pads_at(salt, 1, at), whole[at])
