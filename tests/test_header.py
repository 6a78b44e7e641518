"""The seal header: authenticated settings, tensor table and user metadata."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import FormatError, KeyMismatchError, ParamSealError, files
from paramseal._header_body import _mac
from paramseal.header import METADATA_KEY, HeaderAuthError, metadata_digest, own_entries, parse_header


def _edit(text: str, fn: Callable[[dict], None]) -> str:
    h = json.loads(text)
    fn(h)
    return json.dumps(h, sort_keys=True, separators=(",", ":"))


def _bump_hex(s: str) -> str:
    return s[:-1] + ("0" if s[-1] != "0" else "1")


def _ext_tag(h: dict) -> None:
    i, v = next(iter(h["external_tags"].items()))
    raw = bytearray(base64.b64decode(v))
    raw[0] ^= 1
    h["external_tags"][i] = base64.b64encode(bytes(raw)).decode()


EDITS: dict[str, Callable[[dict], None]] = {
    "level": lambda h: h.update(level="strong"),
    "bits": lambda h: h.update(bits=8),
    "block": lambda h: h.update(block=32),
    "mac": lambda h: h.update(mac="hmac-sha256"),
    "code": lambda h: h.update(code="none"),
    "shard_bytes": lambda h: h.update(shard_bytes=8),
    "lanes": lambda h: h.update(lanes=h["lanes"] + 1),
    "salt": lambda h: h.update(salt=_bump_hex(h["salt"])),
    "hmac": lambda h: h.update(hmac=_bump_hex(h["hmac"])),
    "tensor_name": lambda h: h["tensors"][0].update(name="evil"),
    "tensor_shape": lambda h: h["tensors"][1].update(shape=[33, 40]),
    "tensor_dtype": lambda h: h["tensors"][2].update(dtype="F16"),
    "tensor_k": lambda h: h["tensors"][0].update(k=4),
    "tensor_removed": lambda h: h["tensors"].pop(),
    "tensor_added": lambda h: h["tensors"].append({"name": "x", "dtype": "F32", "shape": [4], "k": 8}),
    "tensors_reordered": lambda h: h["tensors"].reverse(),
    "external_tag_changed": _ext_tag,
    "external_tags_dropped": lambda h: h.update(external_tags={}),
    "user_metadata_changed": lambda h: h["user_metadata"].update(author="mallory"),
    "user_metadata_added": lambda h: h["user_metadata"].update(extra="1"),
    "user_metadata_removed": lambda h: h["user_metadata"].pop("license"),
    "field_added": lambda h: h.update(note="hello"),
    "field_removed": lambda h: h.pop("lanes"),
    "hmac_removed": lambda h: h.pop("hmac"),
    "fingerprint_removed": lambda h: h.pop("key_fingerprint"),
}


@pytest.mark.parametrize("field", list(EDITS))
def test_any_header_edit_is_detected_by_the_api(sealed: paramseal.SealedModel, key: paramseal.Key, field: str) -> None:
    text = _edit(sealed.header_json, EDITS[field])
    assert text != sealed.header_json
    with pytest.raises(HeaderAuthError) as ei:
        paramseal.verify(sealed.tensors, key, text)
    assert ei.value.exit_code == 2
    with pytest.raises(HeaderAuthError):
        paramseal.recover(sealed.tensors, key, text)


def test_edited_key_fingerprint_with_the_right_key_is_an_edited_header_not_a_wrong_key(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    """An attacker must not be able to disguise tampering as a key mix-up (exit 3) by editing the fingerprint."""
    text = _edit(sealed.header_json, lambda h: h.update(key_fingerprint=_bump_hex(h["key_fingerprint"])))
    with pytest.raises(ParamSealError) as ei:
        paramseal.verify(sealed.tensors, key, text)
    assert not isinstance(ei.value, KeyMismatchError), str(ei.value)
    assert ei.value.exit_code == 2


@pytest.mark.parametrize("embedded", [False, True], ids=["file", "weights-copy"])
def test_scheme_edited_to_another_supported_one_fails_authentication(
    sealed: paramseal.SealedModel, key: paramseal.Key, embedded: bool
) -> None:
    """The scheme is under the MAC: read as another scheme this version supports, a seal would be checked
    and rebuilt with the wrong code (an irs4 seal under lanes), so relabelling it must fail authentication."""
    text = parse_header(sealed.header_json, key).to_json(key, embedded=embedded)
    current = json.loads(text)["scheme"]
    others = [s for s in paramseal.header.READS if s != current]
    assert others
    for scheme in others:
        with pytest.raises(HeaderAuthError):
            parse_header(_edit(text, lambda h, s=scheme: h.update(scheme=s)), key)


def test_edited_scheme_is_refused(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    text = _edit(sealed.header_json, lambda h: h.update(scheme="paramseal/0"))
    with pytest.raises(FormatError, match="scheme"):
        paramseal.verify(sealed.tensors, key, text)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", "null", '"x"', "{}", '{"key_fingerprint": 1}'])
def test_garbage_header_is_detected_as_edited(sealed: paramseal.SealedModel, key: paramseal.Key, text: str) -> None:
    with pytest.raises(HeaderAuthError):
        paramseal.verify(sealed.tensors, key, text)


def test_reformatted_header_with_the_same_content_still_verifies(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    text = json.dumps(json.loads(sealed.header_json), indent=3)
    assert paramseal.verify(sealed.tensors, key, text).status == "intact"


def test_parse_header_round_trips_every_field(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    h = parse_header(sealed.header_json, key)
    want = sealed.header
    for f in (
        "level",
        "bits",
        "salt",
        "key_fingerprint",
        "lanes",
        "tensors",
        "user_metadata",
        "scheme",
        "block",
        "mac",
        "code",
    ):
        assert getattr(h, f) == getattr(want, f), f
    assert set(h.external_tags) == set(want.external_tags)
    assert all(np.array_equal(h.external_tags[i], want.external_tags[i]) for i in h.external_tags)
    assert h.to_json(key) == sealed.header_json


def test_header_json_is_compact_canonical_and_keyless(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    assert sealed.header_json == json.dumps(json.loads(sealed.header_json), sort_keys=True, separators=(",", ":"))
    assert key.secret.hex() not in sealed.header_json


# --------------------------------------------------------------------------- user metadata


SEALED_META = {"author": "tests", "license": "apache-2.0"}


@pytest.mark.parametrize(
    "meta, word, k",
    [
        ({"author": "mallory", "license": "apache-2.0"}, "changed", "author"),
        ({**SEALED_META, "backdoor": "yes"}, "added", "backdoor"),
        ({"author": "tests"}, "removed", "license"),
    ],
)
def test_user_metadata_edits_are_named_and_recover_restores_them(
    sealed: paramseal.SealedModel, key: paramseal.Key, meta: dict, word: str, k: str
) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json, metadata=meta)
    assert r.status == "tampered" and r.exit_code == 1 and r.recoverable
    assert r.metadata_issues == (f"key '{k}' was {word}",)
    assert r.tampered_tensors == []
    assert k in r.summary()
    res = paramseal.recover(sealed.tensors, key, sealed.header_json, metadata=meta)
    assert res.report.status == "recovered"
    assert res.metadata == SEALED_META


def test_metadata_matching_the_seal_is_intact(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json, metadata=dict(reversed(list(SEALED_META.items()))))
    assert r.status == "intact" and r.metadata_issues == ()


def test_every_metadata_difference_is_listed(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json, metadata={"author": "x", "new": "y"})
    assert set(r.metadata_issues) == {"key 'author' was changed", "key 'new' was added", "key 'license' was removed"}


# --------------------------------------------------------------------------- through files and the CLI


def _rewrite_meta(src: Path, dst: Path, fn: Callable[[dict], None]) -> Path:
    tensors, meta = helpers.read_st(src)
    fn(meta)
    return helpers.write_st(dst, tensors, meta)


@pytest.mark.parametrize(
    "field",
    ["level", "salt", "tensor_shape", "tensors_reordered", "external_tag_changed", "user_metadata_changed", "hmac"],
)
def test_cli_edited_header_exits_2_and_writes_nothing(
    tmp_path: Path, sealed_file: Path, key_file: Path, field: str
) -> None:
    bad = _rewrite_meta(
        sealed_file, tmp_path / "edited.safetensors", lambda m: m.update(paramseal=_edit(m["paramseal"], EDITS[field]))
    )
    before = helpers.listing(tmp_path)
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 2, (out, err)
    assert "Traceback" not in err and "edited" in err
    rc, out, err = helpers.run_cli(["recover", bad, tmp_path / "out.safetensors", "--key", key_file, "--json"])
    assert rc == 2 and not (tmp_path / "out.safetensors").exists()
    assert helpers.listing(tmp_path) == before


def test_cli_edited_header_message_names_the_file(tmp_path: Path, sealed_file: Path, key_file: Path) -> None:
    bad = _rewrite_meta(
        sealed_file,
        tmp_path / "edited.safetensors",
        lambda m: m.update(paramseal=_edit(m["paramseal"], EDITS["level"])),
    )
    rc, _, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 2
    assert "edited.safetensors" in err, err


def test_file_metadata_edits_are_named_and_recover_restores_them(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    bad = _rewrite_meta(
        sealed_file,
        tmp_path / "meta.safetensors",
        lambda m: (m.update(author="mallory"), m.pop("license"), m.update(x="1")),
    )
    r = files.verify_file(bad, key)
    assert r.status == "tampered" and r.exit_code == 1
    assert set(r.metadata_issues) == {"key 'author' was changed", "key 'license' was removed", "key 'x' was added"}
    out = tmp_path / "fixed.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.report.status == "recovered"
    _, meta = helpers.read_st(out)
    assert {k: v for k, v in meta.items() if k != METADATA_KEY} == SEALED_META
    assert files.verify_file(out, key).status == "intact"


def test_stripped_seal_header_is_not_sealed_with_a_hint(tmp_path: Path, sealed_file: Path, key_file: Path) -> None:
    bad = _rewrite_meta(sealed_file, tmp_path / "stripped.safetensors", lambda m: m.pop("paramseal"))
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 2  # stripping the header of a sealed model is tampering
    # a sealed model too small for a copy in its weights: not "seal it first", which would launder it
    assert "stripped.safetensors" in err and "had no room for a copy of its header" in err and "--header-from" in err


def test_own_metadata_digest_is_set_where_own_entries_are_sealed_and_authenticated(key: paramseal.Key) -> None:
    """``own_metadata_sha256``: the digest of ParamSeal's entries alone (a tie, a graph digest)."""
    w = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}
    tie = {"paramseal.tied": '[["v","w",1]]'}
    both = json.loads(paramseal.seal(w, key, metadata={**tie, "owner": "me"}).header_json)
    assert both["own_metadata_sha256"] == paramseal.header.metadata_digest(tie)
    alone = json.loads(paramseal.seal(w, key, metadata=tie).header_json)
    assert alone["own_metadata_sha256"] == alone["user_metadata_sha256"]
    for none in ({"owner": "me"}, {}):  # none of ParamSeal's own: no field
        assert "own_metadata_sha256" not in json.loads(paramseal.seal(w, key, metadata=none).header_json)
    text = json.dumps(both)
    with pytest.raises(HeaderAuthError):  # under the MAC
        parse_header(_edit(text, lambda h: h.update(own_metadata_sha256=_bump_hex(h["own_metadata_sha256"]))), key)
    embedded = parse_header(parse_header(text, key).to_json(key, embedded=True), key)
    assert embedded.user_metadata is None and embedded.own_digest == both["own_metadata_sha256"]


def test_only_paramseal_dot_entries_are_paramseal_s_own(key: paramseal.Key) -> None:
    """A shard's set record ("paramseal_set") or a user's "paramseal_note" is user metadata, not an own entry.

    Own entries are what a .pt keeps (its tie): counted as one, a sealed user key would make every
    .pt sealed with it fail its own digest, and go unchecked against a kept header.
    """
    tie = {"paramseal.tied": '[["v","w",1]]'}
    meta = {**tie, "paramseal_set": '{"shard":"a"}', "paramseal_note": "x", "owner": "me"}
    assert paramseal.header.own_entries(meta) == tie
    w = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}
    shard = json.loads(paramseal.seal(w, key, metadata={"paramseal_set": '{"shard":"a"}'}).header_json)
    assert "own_metadata_sha256" not in shard
    both = json.loads(paramseal.seal(w, key, metadata=meta).header_json)
    assert both["own_metadata_sha256"] == paramseal.header.metadata_digest(tie)


def test_seal_from_before_own_metadata_digest_with_own_entries_authenticates(key: paramseal.Key) -> None:
    """A seal made before ``own_metadata_sha256`` (every ONNX seal has ``paramseal.graph``) still verifies."""
    w = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}
    meta = {"paramseal.graph": "ab" * 32, "owner": "me"}

    def as_before(h: dict) -> None:  # the field absent, the MAC as the older ParamSeal computed it
        del h["own_metadata_sha256"], h["hmac"]
        copy = h.pop("user_metadata")
        h["hmac"] = _mac(key, h)
        h["user_metadata"] = copy

    old = _edit(paramseal.seal(w, key, metadata=meta).header_json, as_before)
    assert parse_header(old, key).user_metadata == meta


def test_seal_from_before_own_metadata_digest_serialises_as_sealed(key: paramseal.Key) -> None:
    """Recover writes an older header back (in the metadata and in the weights) without the newer field.

    With it, the copy in the weights outgrew the room reserved for it (recover crashed on every
    older ONNX seal) and would not be the sealed bytes.
    """
    w = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}
    sealed = paramseal.seal(w, key, metadata={"paramseal.graph": "ab" * 32})

    def as_before(h: dict) -> None:
        del h["own_metadata_sha256"], h["hmac"]
        copy = h.pop("user_metadata")
        h["hmac"] = _mac(key, h)
        h["user_metadata"] = copy

    old = _edit(sealed.header_json, as_before)
    header = parse_header(old, key)
    assert header.to_json(key) == old
    assert "own_metadata_sha256" not in json.loads(header.to_json(key, embedded=True))


def _edited_value(name: str, v: object) -> object:
    """Another value of the same kind for header field ``name``."""
    if name == "keyed_offset":
        return 0  # read as a flag: 1 on, anything else off
    if isinstance(v, bool) or v is None:
        return 8
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        return _bump_hex(v)
    if isinstance(v, list):
        return [*v, 1]
    raise AssertionError(f"no edit for {name}={v!r}")


def test_every_field_of_an_irs_file_header_is_under_the_mac(key: paramseal.Key) -> None:
    """Each field, edited alone, fails authentication, also those only some seals carry.

    The irs4 settings, ``carriers``, ``header_copies``, ``safetensors_header_bytes`` and
    ``own_metadata_sha256``, in the copy kept in the weights (no user metadata beside it, whose
    digest check would otherwise catch a changed digest without the MAC).
    """
    w = {"w": np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)}
    sealed = paramseal.SealConfig().seal(w, key, metadata={"paramseal.tied": '[["v","w",1]]', "u": "v"}, st_room=4096)
    embedded = parse_header(sealed.header_json, key).to_json(key, embedded=True)
    body = json.loads(embedded)
    optional = {"strata", "outer_host", "strata_perms", "keyed_offset", "carriers", "header_copies"}
    optional |= {"safetensors_header_bytes", "own_metadata_sha256"}
    assert optional <= set(body) and "user_metadata" not in body
    skip = {"hmac", "scheme", "tensors", "external_tags", "key_fingerprint"}  # edited in EDITS and their own tests
    for name in sorted(set(body) - skip):
        text = _edit(embedded, lambda h, name=name: h.update({name: _edited_value(name, h[name])}))
        assert text != embedded, name
        with pytest.raises(HeaderAuthError):
            parse_header(text, key)


def test_optional_fields_left_out_of_a_header_read_as_the_older_seals_that_lack_them(key: paramseal.Key) -> None:
    """Fields absent from older seals' headers (and so from their MAC) read as what those seals did.

    An irs4 seal without ``keyed_offset`` or ``strata_perms`` has no keyed pad and unpermuted groups,
    and one without ``header_copies`` one copy in each carrier: read otherwise, recover rebuilds it wrongly.
    """
    w = {"w": np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)}
    h = parse_header(paramseal.seal(w, key).header_json, key)
    assert h.irs and h.keyed_offset and h.strata_perms and h.copies != 1  # a current seal records all three
    old = replace(h, keyed_offset=False, strata_perms=0, copies=1)
    for embedded in (False, True):
        body = json.loads(old.to_json(key, embedded=embedded))
        assert not {"keyed_offset", "strata_perms", "header_copies"} & set(body)
        got = parse_header(json.dumps(body), key)
        assert (got.keyed_offset, got.strata_perms, got.copies) == (False, 0, 1)


def _other(v: object) -> object:
    """Another JSON value of the same kind."""
    if isinstance(v, bool) or v is None:
        return 8
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        return _bump_hex(v) if v and all(c in "0123456789abcdef" for c in v) else v + "x"
    if isinstance(v, list):
        return [*v, 1]
    if isinstance(v, dict):
        return {**v, "z": "1"}
    raise AssertionError(f"no edit for {v!r}")


def _every_edit(body: dict) -> dict[str, dict]:
    """The header JSON ``body`` with one field edited, for every field: each tensor's and each entry's too."""
    out: dict[str, dict] = {}
    for name, v in body.items():
        edited = {"paramseal/2": "paramseal/3", "paramseal/3": "paramseal/2"}.get(v, v) if name == "scheme" else v
        out[name] = {**body, name: _other(v) if edited == v else edited}
        if isinstance(v, dict):  # the external tags and the user metadata, entry by entry
            out |= {f"{name}.{e}": {**body, name: {**v, e: _other(x)}} for e, x in v.items()}
    for i, t in enumerate(body["tensors"]):
        for f, x in t.items():
            tensors = [dict(s) for s in body["tensors"]]
            tensors[i][f] = _other(x)
            out[f"tensors.{t['name']}.{f}"] = {**body, "tensors": tensors}
    out["tensors.reordered"] = {**body, "tensors": body["tensors"][::-1]}
    # the user metadata and its digest edited together: only the MAC over the digest catches that
    meta = {**body["user_metadata"], "author": "mallory"}
    out["user_metadata+digest"] = {**body, "user_metadata": meta, "user_metadata_sha256": metadata_digest(meta)}
    if "own_metadata_sha256" in body:
        own = {**meta, **{k: v + " " for k, v in own_entries(meta).items()}}
        out["own_entries+digests"] = {
            **body,
            "user_metadata": own,
            "user_metadata_sha256": metadata_digest(own),
            "own_metadata_sha256": metadata_digest(own_entries(own)),
        }
    out["tensors.last_removed"] = {**body, "tensors": body["tensors"][:-1]}
    return out


@pytest.mark.parametrize("code", ["lanes", "irs"])
def test_every_field_edited_in_a_sealed_files_header_is_reported_as_an_edited_header(
    tmp_path: Path, key: paramseal.Key, key_file: Path, code: str
) -> None:
    """A safetensors file's header with any one field edited (re-serialised) verifies as an edited header.

    Every field is under the MAC, each tensor's ``reserved`` and the last tensor's fields too: one left
    out would authenticate with the edit, and verify would use the edited value. The weights hold an
    authentic copy, so the verdict is tampered (exit 1) with a note naming the metadata header, never intact.
    """
    rng = np.random.default_rng(3)
    model = {"w": rng.standard_normal((512, 256)).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32)}
    if code == "lanes":
        model |= {"h": rng.standard_normal((64, 64)).astype(np.float16), "pos": np.arange(40, dtype=np.int64)}
    meta = {"author": "tests", "paramseal.tied": '[["v","w",1]]'} if code == "irs" else {"author": "tests"}
    src = helpers.write_st(tmp_path / "src.safetensors", model, meta)
    files.seal_file(src, tmp_path / "sealed.safetensors", key, code=code)
    tensors, meta = helpers.read_st(tmp_path / "sealed.safetensors")
    body = json.loads(meta[METADATA_KEY])
    assert (body["scheme"] == "paramseal/3") == (code == "irs") and body["carriers"] and body["external_tags"]
    edits = _every_edit(body)
    assert {"salt", "user_metadata+digest", "safetensors_header_bytes", "tensors.w.reserved"} <= set(edits)
    assert code == "lanes" or {"strata", "strata_perms", "keyed_offset", "own_entries+digests"} <= set(edits)
    p = tmp_path / "edited.safetensors"
    for what, edited in edits.items():
        helpers.write_st(p, tensors, {**meta, METADATA_KEY: json.dumps(edited, indent=1)})
        r = files.verify_file(p, key)
        assert r.status == "tampered", (what, r.summary())
        assert "the ParamSeal header in the metadata does not authenticate" in r.summary(), (what, r.summary())
        assert "its authenticated copy in the weights was used" in r.summary(), what
    rc, out, _ = helpers.run_cli(["verify", p, "--key", key_file])
    assert rc == 1 and "does not authenticate" in out, out


@pytest.mark.parametrize(
    "fp", ["\x1b[31mRED\x1b[0m 0123456789abcdef", "abc\nOK: model is intact", "f" * 100_000, "0123456789ABCDEF", 12]
)
def test_a_fingerprint_that_no_key_has_is_a_malformed_header_never_quoted_as_another_key(
    sealed: paramseal.SealedModel, key: paramseal.Key, fp: object
) -> None:
    """The header's key fingerprint is read before its MAC: whatever text a forger put there (terminal escapes, a
    fake 'OK:' line, 100 kB) was echoed as 'the model was sealed with key fingerprint ...' (KeyMismatchError)."""
    text = _edit(sealed.header_json, lambda h: h.update(key_fingerprint=fp, level="light"))
    with pytest.raises(HeaderAuthError, match=r"malformed \(its key fingerprint is not 16 hex digits\)") as ei:
        parse_header(text, key)
    assert str(fp) not in str(ei.value) and len(str(ei.value)) < 300
    other = _edit(sealed.header_json, lambda h: h.update(key_fingerprint="0123456789abcdef", level="light"))
    with pytest.raises(KeyMismatchError, match="sealed with key fingerprint 0123456789abcdef"):
        parse_header(other, key)  # a well-formed one is still another key's


@pytest.mark.parametrize("scheme", ["paramseal/" + "x" * 1_000_000, "x" * 1_000_000], ids=["paramseal-x", "x"])
def test_an_unauthenticated_scheme_is_quoted_cut_short(
    sealed: paramseal.SealedModel, key: paramseal.Key, scheme: str
) -> None:
    """The scheme is read before the MAC: a forged one of a million characters was quoted whole in the error."""
    text = _edit(sealed.header_json, lambda h: h.update(scheme=scheme))
    with pytest.raises(FormatError, match=r"scheme \(?'(paramseal/)?x{10,}\.\.\.[ )]") as ei:
        parse_header(text, key)
    assert len(str(ei.value)) < 400, str(ei.value)[:500]


@pytest.mark.parametrize("code", ["lanes", "irs"])
def test_a_header_with_carriers_is_not_written_again_to_size_its_copies(
    tmp_path: Path, key: paramseal.Key, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse_header serialised and MAC'd the header once more (``Header.to_json``) to know the length of the copy
    its carriers hold: the canonical body it authenticates is that copy but for its MAC, and gives the same length."""
    from paramseal._embed_merge import RECORD_BYTES, blocks_needed
    from paramseal.header import Header

    rng = np.random.default_rng(3)
    src = helpers.write_st(tmp_path / "m.safetensors", {"w": rng.standard_normal((512, 256)).astype(np.float32)}, {})
    files.seal_file(src, tmp_path / "s.safetensors", key, code=code)
    text = helpers.read_st(tmp_path / "s.safetensors")[1][METADATA_KEY]
    h = parse_header(text, key)
    (c,) = h.carriers
    need = RECORD_BYTES + h.copies * len(h.to_json(key, embedded=True))
    body = json.loads(text)
    del body["hmac"], body["user_metadata"]

    def forged(reserved: int) -> str:
        body["tensors"][c]["reserved"] = reserved
        return json.dumps(body | {"hmac": _mac(key, body)})

    enough, short = forged(blocks_needed(h.tensors[c].k, need)), forged(blocks_needed(h.tensors[c].k, need) - 1)
    monkeypatch.setattr(Header, "to_json", lambda *_, **__: pytest.fail("the header was written again"))
    assert parse_header(text, key).tensors == h.tensors
    assert parse_header(enough, key).carriers == (c,)
    with pytest.raises(FormatError, match=f"too few for a record and {h.copies} header copies \\({need} bytes\\)"):
        parse_header(short, key)
