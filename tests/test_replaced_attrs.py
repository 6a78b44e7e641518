"""A file replaced by an output (recover --in-place, seal or recover over an existing OUT) keeps its mode, owner,
group and extended attributes (ACLs among them); what cannot be kept narrows access, never widens it."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import helpers
import pytest

import paramseal
from paramseal import files
from paramseal.errors import ParamSealWarning
from paramseal.formats import Loaded
from paramseal.formats.base import new_mode

ACL = "system.posix_acl_access"
FORMATS = [".safetensors", ".pt", ".onnx", ".npz", ".npy"]
is_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root may give a file to another owner"
)


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as Linux stores it in its xattr: version 2, then (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i & 0xFFFFFFFF) for t, p, i in entries)


# owner rw, user 4321 r, owning group nothing, mask r, others nothing: 'ls' shows 0640, yet the group may not read
PRIVATE_ACL = _acl((0x01, 6, -1), (0x02, 4, 4321), (0x04, 0, -1), (0x10, 4, -1), (0x20, 0, -1))


def _needs_xattrs(folder: Path, name: str = "user.paramseal.test", value: bytes = b"1") -> None:
    probe = folder / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, name, value)
    except (AttributeError, OSError) as e:
        pytest.skip(f"the file system of {folder} takes no '{name}' extended attribute here: {e}")
    finally:
        probe.unlink()


def _model(tmp_path: Path, suffix: str, seed: int) -> Path:
    """A one-tensor model as ``suffix`` (an ONNX model keeps it in external data, written by its own files)."""
    w = helpers.fp32_model(1 << 16, seed=seed)
    if suffix != ".onnx":
        src = helpers.write_st(tmp_path / "in.safetensors", w)
        if suffix != ".safetensors":
            files.write_model(tmp_path / f"in{suffix}", files.read_model(src))
        return tmp_path / f"in{suffix}"
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    model = helper.make_model(helper.make_graph([], "g", [], [], [numpy_helper.from_array(v, k) for k, v in w.items()]))
    onnx.save_model(model, str(tmp_path / "in.onnx"), save_as_external_data=True, location="in.onnx.data")
    return tmp_path / "in.onnx"


def _tampered(tmp_path: Path, key: paramseal.Key, suffix: str) -> Path:
    """A sealed model as ``suffix`` with one bit flipped, written whole (safetensors then takes the atomic path)."""
    src = _model(tmp_path, suffix, 3)
    sealed = tmp_path / f"sealed{suffix}"
    files.seal_file(src, sealed, key)
    got = files.read_model(sealed)
    name = next(iter(got.tensors))
    files.write_model(sealed, Loaded(helpers.flip_bit(got.tensors, name, 5, 3), got.metadata, got.source))
    return sealed


def _replace(tmp_path: Path, key: paramseal.Key, suffix: str, how: str, dress: object) -> Path:
    """``dress(path)`` the file, then replace it: by recover --in-place, or by sealing another model over it."""
    if how == "recover --in-place":
        out = _tampered(tmp_path, key, suffix)
        dress(out)  # type: ignore[operator]
        assert files.recover_file(out, out, key, in_place=True).report.ok
        return out
    src = _model(tmp_path, suffix, 4)
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"an older file")
    dress(out)  # type: ignore[operator]
    files.seal_file(src, out, key)
    return out


@pytest.mark.parametrize("how", ["recover --in-place", "seal over OUT"])
@pytest.mark.parametrize("suffix", FORMATS)
def test_a_replaced_file_keeps_its_extended_attributes(
    tmp_path: Path, key: paramseal.Key, suffix: str, how: str
) -> None:
    """The new file was renamed over the old one, and the old one's user.* attributes went with it."""
    _needs_xattrs(tmp_path)

    def dress(p: Path) -> None:
        os.setxattr(p, "user.origin", b"hub:org/model@abc123")
        os.chmod(p, 0o640)

    out = _replace(tmp_path, key, suffix, how, dress)
    assert os.getxattr(out, "user.origin") == b"hub:org/model@abc123"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640


@is_root
@pytest.mark.parametrize("how", ["recover --in-place", "seal over OUT"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".onnx"])
def test_a_replaced_file_keeps_its_owner_and_group(tmp_path: Path, key: paramseal.Key, suffix: str, how: str) -> None:
    """Root's in-place recover of a user's model gave the user's model to root."""

    def dress(p: Path) -> None:
        os.chown(p, 1234, 5678)
        os.chmod(p, 0o600)

    out = _replace(tmp_path, key, suffix, how, dress)
    st = os.stat(out)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o600)
    if suffix == ".onnx":  # its new external data goes with it
        data = list(tmp_path.glob(f"{out.name}*.data"))
        assert data and all((d.stat().st_uid, d.stat().st_gid, d.stat().st_mode & 0o777) == st[4:6] + (0o600,)
                            for d in data)  # fmt: skip


def _with_acl(tmp_path: Path) -> None:
    _needs_xattrs(tmp_path, ACL, PRIVATE_ACL)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_replaced_file_keeps_its_acl_and_its_owning_group_stays_shut_out(
    tmp_path: Path, key: paramseal.Key, suffix: str
) -> None:
    """The ACL was lost and the mode (0640, its mask) kept: the owning group, which the ACL shut out, could read."""
    _with_acl(tmp_path)
    out = _replace(tmp_path, key, suffix, "recover --in-place", lambda p: os.setxattr(p, ACL, PRIVATE_ACL))
    assert os.getxattr(out, ACL) == PRIVATE_ACL
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640


def test_a_replaced_file_without_an_acl_gets_none_from_its_folders_default_acl(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """The temporary file took the folder's default ACL (user 4321 may read), which the file it replaced lacked."""
    _with_acl(tmp_path)
    folder = tmp_path / "shared"
    folder.mkdir()
    out = _tampered(folder, key, ".npz")
    os.setxattr(
        folder, "system.posix_acl_default", _acl((1, 6, -1), (2, 4, 4321), (4, 4, -1), (0x10, 4, -1), (0x20, 4, -1))
    )
    assert ACL not in os.listxattr(out)
    files.recover_file(out, out, key, in_place=True)
    assert ACL not in os.listxattr(out)


def test_an_acl_that_cannot_be_copied_leaves_the_file_to_its_owner_and_says_so(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the ACL is not copied, the mode's group bits (the ACL's mask) would open the file to the group."""
    _with_acl(tmp_path)
    out = _tampered(tmp_path, key, ".npz")
    os.setxattr(out, ACL, PRIVATE_ACL)
    real = os.setxattr

    def refused(path: object, name: str, *a: object, **kw: object) -> None:
        if name == ACL:
            raise PermissionError(1, "Operation not permitted")
        real(path, name, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "setxattr", refused)
    with pytest.warns(ParamSealWarning, match=r"without extended attributes system\.posix_acl_access.*mode is now 600"):
        files.recover_file(out, out, key, in_place=True)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and ACL not in os.listxattr(out)


@is_root
def test_a_group_that_cannot_be_kept_takes_the_group_bits_with_it(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user not in the file's group replaces it: the new file's group is theirs, and 0640 would let it read."""
    out = _tampered(tmp_path, key, ".npz")
    os.chown(out, os.getuid(), 5678)
    os.chmod(out, 0o640)

    def not_root(*a: object, **kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", not_root)
    with pytest.warns(ParamSealWarning, match=r"without its group \(gid 5678.*mode is now 600"):
        files.recover_file(out, out, key, in_place=True)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_recover_in_place_of_a_hard_linked_model_warns_that_the_other_name_is_still_tampered(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The new file replaces one name: the other link kept the tampered model, and nothing said so."""
    out = _tampered(tmp_path, key, ".npz")
    other = tmp_path / "other-name.npz"
    os.link(out, other)
    rc, _, err = helpers.run_cli(["recover", out, out, "--in-place", "--key", key_file])
    assert rc == 0 and files.verify_file(out, key).ok
    assert f"warning: '{out}' had 1 other hard link" in err and f"-inum {other.stat().st_ino}" in err, err
    assert not files.verify_file(other, key).ok  # as the warning says


def test_a_link_at_out_is_replaced_by_a_new_file_that_takes_nothing_from_the_file_it_named(
    tmp_path: Path, key: paramseal.Key, model_file: Path
) -> None:
    """The link's target lent the new file its mode (0444 here), though that file is not the one replaced."""
    target = tmp_path / "kept.bin"
    target.write_bytes(b"x")
    target.chmod(0o444)
    link = tmp_path / "link.safetensors"
    link.symlink_to(target.name)
    files.seal_file(model_file, link, key)
    assert not link.is_symlink() and target.read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(link).st_mode) == new_mode()  # a new file's: 0666 less the umask


@pytest.mark.parametrize("swap", ["link", "hard link"])
def test_a_temporary_file_swapped_while_written_is_refused_and_the_file_it_names_keeps_its_mode_and_owner(
    tmp_path: Path, swap: str
) -> None:
    """Whoever else may write OUT's folder could put a link at the temporary file's name while the output was
    written: its mode (and as root its owner: 1234:5678 here) were then set through the link, on the file it named
    (/etc/shadow, for root's recover --in-place in a user's folder)."""
    from paramseal._paths import atomic_path
    from paramseal.errors import OutputError

    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    victim.chmod(0o600)
    before = victim.stat()
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o644)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.chown(out, 1234, 5678)
    with pytest.raises(OutputError, match=r"temporary file .* was replaced while it was written"):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"new")
            tmp.unlink()
            tmp.symlink_to(victim) if swap == "link" else os.link(victim, tmp)
    st = victim.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, before.st_uid, before.st_gid)
    assert victim.read_bytes() == b"secret" and out.read_bytes() == b"old"


def test_a_replaced_file_does_not_keep_setuid_or_setgid_bits(tmp_path: Path) -> None:
    """A 6755 file replaced came back 6755: its new content run as its owner (or, where the owner could not be kept,
    as the user who replaced it), which a write by anyone but root would have dropped."""
    from paramseal._paths import atomic_path

    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o6755)
    with pytest.warns(ParamSealWarning, match=r"without its setuid and setgid bits.*mode is now 755"):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"new")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and out.read_bytes() == b"new"


def test_a_file_made_private_while_its_replacement_was_written_stays_private(tmp_path: Path) -> None:
    """The old file's mode was read before the output was written: a 0644 OUT made 0600 meanwhile came back 0644,
    open to all again (before 'ed0f0f1' it was read just before the rename)."""
    from paramseal._paths import atomic_path

    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o644)
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"new")
        out.chmod(0o600)  # its owner, meanwhile
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_bytes() == b"new"


def test_a_file_is_replaced_where_python_has_no_extended_attribute_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On macOS Python has no os.getxattr: the check for an ACL inherited from the folder raised AttributeError, so
    every output over an existing file (recover --in-place among them) failed there."""
    from paramseal._paths import atomic_path

    for call in ("listxattr", "getxattr", "setxattr", "removexattr"):
        monkeypatch.delattr(os, call, raising=False)
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"new")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() == b"new"
