"""Keys: generation, parsing, files, the environment variable, fingerprints and wrong-key errors."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import KeyFileError, KeyMismatchError, UsageError
from paramseal.keys import ENV_VAR


def test_generate_gives_distinct_32_byte_keys() -> None:
    keys = {paramseal.Key.generate().secret for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) == 32 for k in keys)


@pytest.mark.parametrize("n", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(n: int) -> None:
    with pytest.raises(KeyFileError, match="32 bytes"):
        paramseal.Key(bytes(n))


@pytest.mark.parametrize("secret", ["ab" * 16, "ab" * 32, 12345, [1] * 32], ids=["str32", "hex64", "int", "list"])
def test_a_key_of_another_type_is_a_usage_error_that_never_quotes_it(secret: object) -> None:
    """Key('x' * 32) was accepted, and failed later in HKDF with cryptography's TypeError."""
    with pytest.raises(UsageError, match="Key takes the secret as bytes") as e:
        paramseal.Key(secret)  # type: ignore[arg-type]
    assert "abab" not in str(e.value)


def test_a_key_from_a_bytearray_keeps_a_copy_of_its_own() -> None:
    raw = bytearray(range(32))
    k = paramseal.Key(raw)  # type: ignore[arg-type]
    fp = k.fingerprint
    raw[:] = bytes(32)
    assert type(k.secret) is bytes and k.secret == bytes(range(32)) and k.fingerprint == fp
    assert hash(k) == hash(paramseal.Key(bytes(range(32))))


@pytest.mark.parametrize("given", ["key", "bytes"])
def test_load_key_of_a_key_or_bytes_is_a_usage_error(key: paramseal.Key, given: str) -> None:
    """Not pathlib's TypeError; the secret's bytes are never quoted."""
    arg = key if given == "key" else key.secret
    with pytest.raises(UsageError, match="load_key takes the path of a key file") as e:
        paramseal.load_key(arg)  # type: ignore[arg-type]
    assert key.secret.hex() not in str(e.value) and repr(key.secret) not in str(e.value)


def test_from_text_accepts_surrounding_whitespace_and_upper_case(key: paramseal.Key) -> None:
    text = "\n  " + key.secret.hex().upper() + " \n"
    assert paramseal.Key.from_text(text) == key


@pytest.mark.parametrize(
    "text, why",
    [("ab" * 31, "64 hex digits"), ("ab" * 33, "64 hex digits"), ("zz" * 32, "not hex"), ("", "64 hex digits")],
)
def test_from_text_rejects_malformed_text_without_echoing_it(text: str, why: str) -> None:
    with pytest.raises(KeyFileError, match=why) as ei:
        paramseal.Key.from_text(text)
    assert text.strip() == "" or text not in str(ei.value)
    assert "keygen" in str(ei.value)


def test_repr_and_str_never_show_the_secret(key: paramseal.Key) -> None:
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert key.secret.hex() not in text.lower()
        assert key.secret.hex()[:16] not in text.lower()
    assert key.fingerprint in str(key)


def test_repr_names_the_fingerprint_as_str_does(key: paramseal.Key) -> None:
    """A key in a list, a dict or a debugger shows which key it is: repr was the bare ``Key()``."""
    shown = f"Key(fingerprint={key.fingerprint})"
    assert repr(key) == str(key) == shown and repr([key]) == f"[{shown}]" and repr({"k": key}) == f"{{'k': {shown}}}"


def test_fingerprint_is_16_hex_digits_stable_and_not_part_of_the_secret(
    key: paramseal.Key, other_key: paramseal.Key
) -> None:
    fp = key.fingerprint
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == paramseal.Key(key.secret).fingerprint
    assert fp != other_key.fingerprint
    assert fp not in key.secret.hex()


def test_derive_is_deterministic_and_separates_purposes(key: paramseal.Key, other_key: paramseal.Key) -> None:
    a, b = key.derive("mac-hash"), key.derive("mac-pad")
    assert a == key.derive("mac-hash") and len(a) == 32
    assert a != b
    assert a != other_key.derive("mac-hash")
    assert len(key.derive("x", 8)) == 8
    assert key.secret not in (a, b)


def test_every_subkey_has_its_own_hkdf_label() -> None:
    """Domain separation: each ``key.derive(...)`` call site in the package uses a label no other uses.

    Two purposes sharing a label share a subkey (the fingerprint, published in every report, would
    then be a prefix of a secret subkey). The golden files cannot show every such collision: those
    with the lane code have one lane, where the interleave subkey changes nothing.
    """
    src = Path(paramseal.__file__).parent
    sites = [
        (m.group(1), f"{p.name}:{text.count(chr(10), 0, m.start()) + 1}")
        for p in sorted(src.rglob("*.py"))
        for text in [p.read_text()]
        for m in re.finditer(r"""\.derive\(\s*["']([^"']+)["']""", text)
    ]
    labels = [label for label, _ in sites]
    assert len(labels) == len(set(labels)), sorted(sites)
    assert {"fingerprint", "header", "mac-hash", "mac-pad", "interleave"} <= set(labels)  # the scan finds them


def test_write_key_creates_owner_only_file_and_load_key_reads_it(tmp_path: Path, key: paramseal.Key) -> None:
    p = paramseal.write_key(tmp_path / "k.key", key)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert paramseal.load_key(p) == key
    assert p.read_text().strip() == key.secret.hex()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_key_file_is_owner_read_write_whatever_the_umask(tmp_path: Path, key: paramseal.Key, overwrite: bool) -> None:
    """A umask taking the owner's write (or read) bit away still gives 0600: the key stays usable and replaceable."""
    p = tmp_path / "k.key"
    if overwrite:
        paramseal.write_key(p, key)
    old = os.umask(0o277)
    try:
        paramseal.write_key(p, key, overwrite=overwrite)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert paramseal.load_key(p) == key


def test_write_key_refuses_to_overwrite(tmp_path: Path, key: paramseal.Key, other_key: paramseal.Key) -> None:
    p = paramseal.write_key(tmp_path / "k.key", key)
    with pytest.raises(UsageError, match="exists"):
        paramseal.write_key(p, other_key)
    assert paramseal.load_key(p) == key
    paramseal.write_key(p, other_key, overwrite=True)
    assert paramseal.load_key(p) == other_key


def test_write_key_overwrite_makes_an_existing_readable_file_owner_only(tmp_path: Path, key: paramseal.Key) -> None:
    p = tmp_path / "k.key"
    p.write_text(paramseal.Key.generate().secret.hex() + "\n")  # an old key, left readable by others
    os.chmod(p, 0o644)
    paramseal.write_key(p, key, overwrite=True)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, "a key file must never stay world-readable"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root may give a file to another owner"
)
def test_write_key_overwrite_as_root_keeps_the_keys_owner_and_keeps_it_owner_only(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """sudo keygen --force over a user's key gave the new key to root (0600): the user could no longer read it."""
    p = paramseal.write_key(tmp_path / "k.key", paramseal.Key.generate())
    os.chown(p, 1234, 5678)
    os.chmod(p, 0o640)
    paramseal.write_key(p, key, overwrite=True)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o600)


def test_write_key_overwrite_never_follows_a_symbolic_link(tmp_path: Path, key: paramseal.Key) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("not a key")
    target.chmod(0o644)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        paramseal.write_key(link, key, overwrite=True)
    assert target.read_text() == "not a key" and stat.S_IMODE(target.stat().st_mode) == 0o644
    rc, _, err = helpers.run_cli(["keygen", link, "--force"])
    assert rc == 3 and "symbolic link" in err and target.read_text() == "not a key"


def test_write_key_never_writes_through_a_dangling_symbolic_link(tmp_path: Path, key: paramseal.Key) -> None:
    """A link to a file not there yet "does not exist": writing through it would put the key where the link points."""
    link, target = tmp_path / "k.key", tmp_path / "elsewhere" / "planted.key"
    target.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        paramseal.write_key(link, key)
    assert not target.exists() and link.is_symlink()
    rc, _, err = helpers.run_cli(["keygen", link])
    assert rc == 3 and "symbolic link" in err and not target.exists()


def test_keygen_force_does_not_replace_a_fifo_with_a_key(tmp_path: Path, key: paramseal.Key) -> None:
    """--force replaces a key file; a FIFO (or, as root, a device node such as /dev/null) is no key to replace."""
    fifo = tmp_path / "k.key"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        paramseal.write_key(fifo, key, overwrite=True)
    rc, out, err = helpers.run_cli(["keygen", fifo, "--force"])
    assert rc == 3 and "not a regular file" in err and out == ""
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]


@pytest.mark.parametrize(
    ("mode", "how"),
    [(0o644, "readable"), (0o640, "readable"), (0o620, "writable"), (0o602, "writable")]
    + [(0o666, "readable and writable")],
    ids=["others", "group", "group-writes", "others-write", "both"],
)
def test_a_key_file_others_can_read_or_write_is_warned_about(
    tmp_path: Path, sealed_file: Path, key_file: Path, mode: int, how: str
) -> None:
    """Readable by its group alone is readable by other users too. Writable by others (0620, 0602) was not warned
    about: whoever may replace the key may seal a model of their own that then verifies under it."""
    assert helpers.run_cli(["verify", sealed_file, "--key", key_file])[2] == ""  # keygen writes it 0600
    key_file.chmod(mode)
    rc, _, err = helpers.run_cli(["verify", sealed_file, "--key", key_file])
    assert rc == 0 and f"is {how} by other users (mode {mode:o})" in err and "chmod 600" in err, err


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o777, True), (0o770, True), (0o1777, False), (0o755, False)],
    ids=["others-write", "group-writes", "sticky", "owner-writes"],
)
def test_a_key_in_a_folder_others_can_write_is_warned_about(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, mode: int, warned: bool
) -> None:
    """A key file of mode 600 in a folder others may write went unwarned: they may rename a key of theirs over it
    (OpenSSH's StrictModes refuses it). A sticky folder (/tmp's 1777) lets no one but its owner rename the file."""
    folder = tmp_path / "keys"
    folder.mkdir()
    folder.chmod(mode)  # stat's mode bits: the same when the tests run as root
    kf = paramseal.write_key(folder / "k.key", key)
    said = f"key file '{kf}' is in folder '{folder}', which other users can write (mode {mode:o})"
    for argv in (["verify", sealed_file, "--key", kf], ["keygen", folder / "new.key"]):
        rc, out, err = helpers.run_cli(argv)
        new = paramseal.load_key(folder / "new.key") if argv[0] == "keygen" else key
        assert rc == 0 and new.secret.hex() not in (out + err).lower(), (argv, out, err)
        if not warned:
            assert err == "", (argv, err)
            continue
        shown = said if argv[0] == "verify" else said.replace("k.key", "new.key")
        assert err.count("warning: ") == 1 and shown in err and f"run 'chmod go-w {folder}'" in err, (argv, err)
    monkeypatch.chdir(folder)  # a bare name: its folder is named in full, not as '.'
    rc, _, err = helpers.run_cli(["verify", sealed_file, "--key", "k.key"])
    assert rc == 0 and (f"'k.key' is in folder '{folder}'" in err) == warned, err


def test_load_key_missing_file_names_it_and_suggests_keygen(tmp_path: Path) -> None:
    p = tmp_path / "nope.key"
    with pytest.raises(KeyFileError) as ei:
        paramseal.load_key(p)
    assert str(p) in str(ei.value) and "keygen" in str(ei.value)


@pytest.mark.parametrize("case", [str.lower, str.upper, lambda h: h + "\n"])
def test_key_text_passed_as_the_key_file_path_is_not_echoed(
    sealed_file: Path, key: paramseal.Key, case: Callable[[str], str]
) -> None:
    text = case(key.secret.hex())  # `--key "$(cat my.key)"` or `--key $PARAMSEAL_KEY`: a common slip
    with pytest.raises(KeyFileError, match="path of a key file") as ei:
        paramseal.load_key(text)
    assert key.secret.hex() not in str(ei.value).lower()
    rc, out, err = helpers.run_cli(["verify", sealed_file, "--key", text, "--json"])
    assert rc == 3 and "path of a key file" in err
    assert key.secret.hex() not in (out + err).lower()
    assert key.secret.hex()[:16] not in (out + err).lower()


@pytest.mark.parametrize(
    "slip", [lambda h: "0x" + h, lambda h: h[:-1], lambda h: h + "0", lambda h: f"'{h}'", lambda h: "key=" + h]
)
def test_key_text_near_miss_passed_as_the_key_file_path_is_not_echoed(
    sealed_file: Path, key: paramseal.Key, slip: Callable[[str], str]
) -> None:
    """A pasted key with a prefix, quotes or a digit too few or many is no path either: never quote it."""
    text = slip(key.secret.hex())
    with pytest.raises(KeyFileError, match="path of a key file") as ei:
        paramseal.load_key(text)
    assert key.secret.hex()[:16] not in str(ei.value).lower()
    rc, out, err = helpers.run_cli(["verify", sealed_file, "--key", text, "--json"])
    assert rc == 3 and "path of a key file" in err
    assert key.secret.hex()[:16] not in (out + err).lower()
    assert key.secret.hex()[-16:] not in (out + err).lower()


@pytest.mark.parametrize(
    "argv",
    [
        lambda s, k, h: ["verify", h, "--key", k, "--json"],  # `verify "$PARAMSEAL_KEY" model`: the key is IN
        lambda s, k, h: ["verify", s, h, "--key", k, "--json"],  # argparse: "unrecognized arguments: <key>"
        lambda s, k, h: ["verify", s, "--key", k, f"--tensors={h}", "--json"],
        lambda s, k, h: ["verify", s, "--key", k, "--header-from", "0x" + h],
        lambda s, k, h: [h, s],  # argparse: "invalid choice: <key>"
        lambda s, k, h: ["verify", h + "/", "--key", k, "--json"],  # the path as the error shows it: no '/'
        lambda s, k, h: ["verify", s, "--key", h + "/x"],  # a key pasted before a name: not the last name
        lambda s, k, h: ["verify", h + "/model.safetensors", "--key", k],
        lambda s, k, h: ["recover", s, h + "/out.safetensors", "--key", k],
    ],
)
def test_key_text_given_for_another_argument_is_not_echoed(
    sealed_file: Path, key_file: Path, key: paramseal.Key, argv: Callable[[str, str, str], list[str]]
) -> None:
    """Key text where a model, a pattern or a command belongs is never quoted back, as ``--key`` is not."""
    rc, out, err = helpers.run_cli(argv(str(sealed_file), str(key_file), key.secret.hex()))
    assert rc == 3 and "not shown" in err
    assert key.secret.hex()[:16] not in (out + err).lower()
    assert key.secret.hex()[-16:] not in (out + err).lower()


def _grouped(h: str, sep: str, size: int = 8) -> str:
    return sep.join(h[i : i + size] for i in range(0, len(h), size))


def _shows_key_digits(text: str, h: str) -> bool:
    """Whether ``text`` holds 8 digits of the key in a row, as written or in groups."""
    return any(h[i : i + 8] in text.lower() for i in range(0, len(h) - 7))


@pytest.mark.parametrize(
    "form",
    [
        lambda h: _grouped(h, "-"),  # as a vault or a UUID-minded UI shows it
        lambda h: _grouped(h, " "),  # quoted, groups of 8
        lambda h: _grouped(h, ":", 2),
        lambda h: _grouped(h, " - "),  # separators of three characters: the key was quoted whole
        lambda h: h[:20] + "-" + h[21:41] + "-" + h[42:],  # two digits mistyped
    ],
)
def test_key_text_in_groups_or_mistyped_is_not_echoed(
    sealed_file: Path, key_file: Path, key: paramseal.Key, form: Callable[[str], str]
) -> None:
    """Key text broken by separators was quoted whole: 'key file 'b010f5bd-735b41d8-...' does not exist'."""
    h = key.secret.hex()
    text = form(h)
    with pytest.raises(KeyFileError, match="path of a key file") as ei:
        paramseal.load_key(text)
    assert not _shows_key_digits(str(ei.value), h)
    for argv in (["verify", sealed_file, "--key", text], ["verify", text, "--key", key_file, "--json"]):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and "not shown" in err
        assert not _shows_key_digits(out + err, h)


def test_key_text_split_over_several_arguments_is_not_echoed(sealed_file: Path, key: paramseal.Key) -> None:
    """`--key $KEY` of a key kept in groups of 8: argparse said 'unrecognized arguments: 735b41d8 7849aa96 ...'."""
    h = key.secret.hex()
    words = [h[i : i + 8] for i in range(0, 64, 8)]
    for argv in (
        ["verify", sealed_file, "--key", *words, "--json"],
        ["verify", sealed_file, f"--key={words[0]}", *words[1:]],
    ):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3
        assert not _shows_key_digits(out + err, h)


@pytest.mark.parametrize(
    "where", [lambda s, k, h: ["verify", h, "--key", k], lambda s, k, h: ["verify", s, "--key", h]]
)
def test_a_name_of_hex_digits_too_long_for_the_system_is_exit_3_not_a_traceback(
    sealed_file: Path, key_file: Path, where: Callable[[str, str, str], list[str]]
) -> None:
    """A 300-digit name: asking whether it existed raised ENAMETOOLONG before parsing, exit 1 (a verdict)."""
    rc, out, err = helpers.run_cli(where(str(sealed_file), str(key_file), "ab" * 150))
    assert rc == 3 and "Traceback" not in err and "ab" * 150 not in out + err
    assert "longer than this system allows" in err


def test_a_missing_key_file_under_a_folder_named_by_a_hash_is_named(tmp_path: Path) -> None:
    """A hub snapshot folder is named by a 40-digit commit hash: its path was hidden as if it were a key."""
    missing = tmp_path / "snapshots" / ("0123456789abcdef" * 3)[:40] / "paramseal.key"
    with pytest.raises(KeyFileError, match="does not exist") as ei:
        paramseal.load_key(missing)
    assert str(missing) in str(ei.value)


def test_an_endless_key_file_is_refused_not_read_forever() -> None:
    """`--key /dev/zero` (a slip, or a hostile path): a bounded read, a clear error, no hang or memory blow-up."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(KeyFileError, match="not a ParamSeal key file"):
        paramseal.load_key("/dev/zero")
    rc, _, err = helpers.run_cli(["verify", "any.safetensors", "--key", "/dev/zero"])
    assert rc == 3 and "not a ParamSeal key file" in err


def test_a_key_read_from_a_pipe_still_loads(tmp_path: Path, key: paramseal.Key) -> None:
    """`--key <(pass show my.key)`: process substitution hands over a FIFO, which is read up to its end."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("w") as f:
            f.write(key.secret.hex() + "\n")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert paramseal.load_key(fifo) == key
    finally:
        writer.join(timeout=10)


def test_load_key_from_environment(monkeypatch: pytest.MonkeyPatch, key: paramseal.Key) -> None:
    monkeypatch.setenv(ENV_VAR, key.secret.hex())
    assert paramseal.load_key() == key


def test_load_key_without_file_or_environment_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="PARAMSEAL_KEY"):
        paramseal.load_key()


def test_malformed_environment_key_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "0123456789abcdef" * 3 + "xyz"
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(KeyFileError) as ei:
        paramseal.load_key()
    assert ENV_VAR in str(ei.value)
    assert bad not in str(ei.value)


# --------------------------------------------------------------------------- wrong key


def test_wrong_key_raises_key_mismatch_with_both_fingerprints(
    sealed: paramseal.SealedModel, key: paramseal.Key, other_key: paramseal.Key
) -> None:
    for call in (paramseal.verify, paramseal.recover):
        with pytest.raises(KeyMismatchError) as ei:
            call(sealed.tensors, other_key, sealed.header_json)
        e = ei.value
        assert e.stored == key.fingerprint and e.given == other_key.fingerprint
        assert key.fingerprint in str(e) and other_key.fingerprint in str(e)
        # which is which: the seal's fingerprint is the one it was sealed with, the given key's the other
        assert f"sealed with key fingerprint {key.fingerprint}" in str(e)
        assert f"the key given has fingerprint {other_key.fingerprint}" in str(e)
        assert e.exit_code == 3
        assert isinstance(e, PermissionError) and isinstance(e, paramseal.ParamSealError)
        assert "tamper" not in str(e).lower()


def test_wrong_key_is_not_a_tamper_report_even_on_a_tampered_model(
    sealed: paramseal.SealedModel, other_key: paramseal.Key
) -> None:
    t = helpers.flip_bit(sealed.tensors, "fc.weight", 5, 30)
    with pytest.raises(KeyMismatchError):
        paramseal.verify(t, other_key, sealed.header_json)


def test_same_model_sealed_with_two_keys_only_verifies_with_its_own(
    model: dict[str, np.ndarray], key: paramseal.Key, other_key: paramseal.Key
) -> None:
    a = paramseal.seal(model, key)
    b = paramseal.seal(model, other_key)
    assert paramseal.verify(a.tensors, key, a.header_json).status == "intact"
    assert paramseal.verify(b.tensors, other_key, b.header_json).status == "intact"
    with pytest.raises(KeyMismatchError):
        paramseal.verify(a.tensors, other_key, a.header_json)
    # Sealed weights never reveal the key: the two seals differ in their low bits.
    assert not helpers.same_bytes(a.tensors["fc.weight"], b.tensors["fc.weight"])


def test_key_never_appears_in_sealed_output(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    assert key.secret.hex() not in sealed.header_json.lower()
    blob = b"".join(np.ascontiguousarray(a).tobytes() for a in sealed.tensors.values())
    assert key.secret not in blob
    assert key.secret.hex().encode() not in blob


def _no_file_growth() -> None:
    """``preexec_fn``: every write to a file fails with EFBIG (RLIMIT_FSIZE 0, SIGXFSZ ignored); pipes still work."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX rlimits")
@pytest.mark.parametrize("force", [False, True])
def test_keygen_that_cannot_write_leaves_no_empty_key_and_keeps_the_old_one(tmp_path: Path, force: bool) -> None:
    """A failed write (full disk, quota) was a traceback, exit 1, and an empty key file; with --force the
    old key was already truncated, so every model sealed with it could no longer be checked."""
    import subprocess
    import sys

    p = tmp_path / "k.key"
    old = paramseal.write_key(p, paramseal.Key.generate()).read_bytes() if force else None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "paramseal", "keygen", str(p), *(["--force"] if force else [])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_no_file_growth, check=False)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and f"cannot write '{p}'" in r.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == (["k.key"] if force else [])  # no temporary file either
    if force:
        assert p.read_bytes() == old


def test_repr_shows_the_secret_in_no_encoding(key: paramseal.Key) -> None:
    """Not as hex only: the bytes' own repr (a dataclass field's default), base64 or a list of ints neither."""
    import base64

    forms = [repr(key.secret)[2:-1], base64.b64encode(key.secret).decode(), str(list(key.secret))[1:-1]]
    for text in (repr(key), str(key), repr([key]), repr({"k": key})):
        assert not any(f in text for f in forms)


def test_an_option_value_naming_an_existing_file_is_not_taken_for_key_text(tmp_path: Path) -> None:
    """``--opt=VALUE`` is judged by VALUE, as ``--opt VALUE`` is: a hub blob is named by a 64-digit SHA-256,
    and that existing path is shown in messages; key text there (no such file) is hidden."""
    from paramseal.keys import key_like_args

    blob = tmp_path / ("0123456789abcdef" * 4)
    blob.write_bytes(b"{}")
    assert key_like_args([str(blob)]) == ()
    assert key_like_args([f"--header-from={blob}"]) == ()
    missing = tmp_path / ("fedcba9876543210" * 4)
    assert str(missing) in key_like_args([f"--header-from={missing}"])
