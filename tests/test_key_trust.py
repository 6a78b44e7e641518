"""Who else may replace a key file: links followed to the file, every folder on the way, and owners (StrictModes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import paramseal
from tests import helpers

_OTHER_UID = 54321  # a user that is neither the one running the tests nor root
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root"
)


def _warnings(argv: list[object], key: paramseal.Key) -> list[str]:
    rc, out, err = helpers.run_cli(argv)
    assert rc == 0 and key.secret.hex() not in (out + err).lower(), (argv, out, err)
    lines = err.splitlines()
    assert all(line.startswith("warning: ") for line in lines), err
    return lines


def _folder(path: Path, mode: int) -> Path:
    path.mkdir(parents=True)
    path.chmod(mode)  # stat's mode bits: the same when the tests run as root
    return path


def test_a_key_reached_by_a_link_is_checked_in_the_folder_of_the_file_it_names(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    """Only the link's own folder was checked: a key in a folder others can write, named by a link in a safe
    folder, went unwarned, though whoever writes that folder can rename a key of theirs over it."""
    kf = paramseal.write_key(_folder(tmp_path / "shared", 0o777) / "k.key", key)
    link = _folder(tmp_path / "mine", 0o755) / "k.key"
    link.symlink_to(kf)
    lines = _warnings(["verify", sealed_file, "--key", link], key)
    said = f"key file '{link}' is in folder '{tmp_path / 'shared'}', which other users can write (mode 777)"
    assert len(lines) == 1 and said in lines[0] and f"chmod go-w {tmp_path / 'shared'}" in lines[0], lines


def test_each_link_on_the_way_is_checked_in_its_own_folder(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    """mine/k.key -> open/hop.key -> safe/k.key: whoever writes 'open' can point 'hop.key' at a key of theirs."""
    kf = paramseal.write_key(_folder(tmp_path / "safe", 0o700) / "k.key", key)
    hop = _folder(tmp_path / "open", 0o770) / "hop.key"
    hop.symlink_to(kf)
    link = _folder(tmp_path / "mine", 0o700) / "k.key"
    link.symlink_to(Path("..") / "open" / "hop.key")  # relative: taken from the link's folder
    lines = _warnings(["verify", sealed_file, "--key", link], key)
    said = f"key file '{link}' is reached through folder '{tmp_path / 'open'}', which other users can write (mode 770)"
    assert len(lines) == 1 and said in lines[0], lines


def test_a_folder_above_the_key_that_others_can_write_is_warned_about(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    """open(777)/mine(700)/k.key: only 'mine' was checked, but whoever writes 'open' can rename 'mine' away and put a
    folder of theirs, holding a key of theirs, in its place. keygen writes into such a folder and says so too."""
    mine = _folder(tmp_path / "open" / "mine", 0o700)
    (tmp_path / "open").chmod(0o777)
    kf = paramseal.write_key(mine / "k.key", key)
    said = f"is reached through folder '{tmp_path / 'open'}', which other users can write (mode 777)"
    lines = _warnings(["verify", sealed_file, "--key", kf], key)
    assert len(lines) == 1 and f"key file '{kf}' {said}" in lines[0], lines
    rc, out, err = helpers.run_cli(["keygen", mine / "new.key"])
    assert rc == 0 and err.count("warning: ") == 1 and f"key file '{mine / 'new.key'}' {said}" in err, err
    assert paramseal.load_key(mine / "new.key").secret.hex() not in (out + err).lower()


def test_a_safe_key_reached_by_links_is_not_warned_about(tmp_path: Path, sealed_file: Path, key: paramseal.Key) -> None:
    """No false alarm: links and folders of the user's own, a sticky folder (/tmp's 1777) on the way, '..' in a link."""
    kf = paramseal.write_key(_folder(tmp_path / "sticky" / "mine", 0o700) / "k.key", key)
    (tmp_path / "sticky").chmod(0o1777)
    link = _folder(tmp_path / "links", 0o755) / "k.key"
    link.symlink_to(Path("..") / "links" / ".." / "sticky" / "mine" / "k.key")
    assert _warnings(["verify", sealed_file, "--key", link], key) == []
    assert _warnings(["verify", sealed_file, "--key", kf], key) == []


@as_root
def test_a_key_file_owned_by_another_user_is_warned_about(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    """A key of mode 600 that another user owns went unwarned: its owner may rewrite it (or chmod it and share it)."""
    kf = paramseal.write_key(tmp_path / "k.key", key)
    os.chown(kf, _OTHER_UID, -1)
    lines = _warnings(["verify", sealed_file, "--key", kf], key)
    said = f"key file '{kf}' is owned by uid {_OTHER_UID}, another user, who could replace the key"
    assert len(lines) == 1 and said in lines[0] and f"chown root {kf}" in lines[0], lines


@as_root
def test_a_folder_owned_by_another_user_is_warned_about_also_in_a_sticky_folder(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    """sticky(1777)/theirs(700, another user's)/k.key: the sticky bit keeps others from renaming 'theirs', but not
    its owner, who may also put a key of theirs in it. A link another user owns in a sticky folder, likewise."""
    theirs = _folder(tmp_path / "sticky" / "theirs", 0o700)
    (tmp_path / "sticky").chmod(0o1777)
    kf = paramseal.write_key(theirs / "k.key", key)
    os.chown(theirs, _OTHER_UID, -1)
    lines = _warnings(["verify", sealed_file, "--key", kf], key)
    said = f"key file '{kf}' is in folder '{theirs}', owned by uid {_OTHER_UID}, another user: they could replace"
    assert len(lines) == 1 and said in lines[0], lines
    os.chown(theirs, 0, -1)
    link = tmp_path / "sticky" / "k.key"
    link.symlink_to(kf)
    os.lchown(link, _OTHER_UID, -1)
    lines = _warnings(["verify", sealed_file, "--key", link], key)
    said = f"key file '{link}' is reached through link '{link}', owned by uid {_OTHER_UID}, in folder"
    assert len(lines) == 1 and said in lines[0], lines


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_key_typed_at_a_terminal_is_not_said_to_be_open_to_others_for_the_terminals_mode() -> None:
    """`--key /dev/stdin` at a terminal warned 'writable by other users (mode 620)': the terminal's mode, which says
    nothing of a key that is nowhere at rest. Only a regular file's mode is the key file's."""
    from paramseal._key_trust import key_file_warnings

    main_fd, tty_fd = os.openpty()
    try:
        tty = Path(os.ttyname(tty_fd))
        os.chmod(tty, 0o620)  # as a login terminal's: written by group tty
        assert not any("mode" in line for line in key_file_warnings(tty)), key_file_warnings(tty)
    finally:
        os.close(main_fd)
        os.close(tty_fd)


def test_the_suite_keeps_its_keys_out_of_a_temporary_folder_others_may_write(tmp_path: Path) -> None:
    """Under a TMPDIR in a folder its group may write (a CI workspace of mode 2775), the tests of a key's warnings
    failed on one more, about that folder (15 in test_keys and test_key_trust; more that read a command's stderr)."""

    def others_may_swap(folder: Path) -> bool:  # in a folder on the way, as the key checks see it
        return any(
            (st.st_mode & 0o022 and not st.st_mode & 0o1000) or st.st_uid not in (os.geteuid(), 0)
            for st in map(os.stat, [folder, *folder.parents])
        )

    if all(others_may_swap(Path(d).resolve()) for d in ("/tmp", "/var/tmp") if Path(d).is_dir()):
        pytest.skip("neither /tmp nor /var/tmp is a temporary root that only you or root may write")
    workspace = _folder(tmp_path / "workspace", 0o2775)
    env = {**os.environ, "TMPDIR": str(workspace)}
    env.pop("PYTEST_DEBUG_TEMPROOT", None)  # this run's own, which conftest set where it chose one
    tests = Path(__file__).parent
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_keys.py"), "-k", "others_can"]
    done = subprocess.run([sys.executable, *argv], cwd=tests.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-3000:]
