"""Messages that must read the same across verbs, and --tensors suggestions (found walking the README)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal


@pytest.mark.parametrize("verb", ["seal", "verify", "recover", "inspect"])
def test_a_missing_input_reads_the_same_in_every_verb(tmp_path: Path, key_file: Path, verb: str) -> None:
    gone = tmp_path / "gone.safetensors"
    argv: list[object] = [verb, gone]
    if verb in ("seal", "recover"):
        argv.append(tmp_path / "out.safetensors")
    if verb != "inspect":
        argv += ["--key", key_file]
    rc, _, err = helpers.run_cli(argv)
    assert rc == 3 and "Traceback" not in err, err
    assert err.strip().endswith(f"input '{gone}' does not exist"), err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("verb", ["seal", "verify"])
def test_an_input_that_is_no_regular_file_says_so(tmp_path: Path, key_file: Path, verb: str) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    argv: list[object] = [verb, fifo] + ([tmp_path / "out.safetensors"] if verb == "seal" else []) + ["--key", key_file]
    rc, _, err = helpers.run_cli(argv)
    assert rc == 3 and f"input '{fifo}' is not a regular file" in err and "does not exist" not in err, err


def test_a_glob_with_a_typo_is_answered_with_the_corrected_glob(tmp_path: Path, key_file: Path) -> None:
    """'model.layer.3.*' once got three whole names ('model.layers.3.q', ...), not 'model.layers.3.*'."""
    model = {f"model.layers.{i}.{p}": np.ones((64, 64), np.float32) for i in range(8) for p in "qkvo"}
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    sealed = tmp_path / "s.safetensors"
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "model.layer.3.*"])
    assert rc == 3 and err.rstrip().endswith("check the pattern (close patterns: 'model.layers.3.*')"), err
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "model.layers.3.qq"])
    assert rc == 3 and "close names: 'model.layers.3.q'" in err, err  # a plain name still gets names


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("verb", ["verify", "recover"])
def test_header_from_missing_or_no_regular_file_is_said_as_for_an_input(
    sealed_file: Path, key_file: Path, tmp_path: Path, verb: str
) -> None:
    gone, fifo = tmp_path / "gone.json", tmp_path / "pipe.json"
    os.mkfifo(fifo)
    out = [tmp_path / "out.safetensors"] if verb == "recover" else []
    for header, said in ((gone, "does not exist"), (fifo, "is not a regular file")):
        rc, _, err = helpers.run_cli([verb, sealed_file, *out, "--key", key_file, "--header-from", header])
        assert rc == 3 and err.strip().endswith(f"header file '{header}' (--header-from, header=) {said}"), err


def test_a_glob_that_starts_with_a_wildcard_gets_its_tail_corrected() -> None:
    """'*.q_prj.weight' once got whole names (or nothing); the glob with the tail fixed is what was meant."""
    from paramseal._findings import unmatched

    pool = [f"model.layers.{i}.{p}_proj.weight" for i in range(8) for p in "qkvo"]
    said = str(unmatched("*.q_prj.weight", pool, "no tensor"))
    assert said.endswith("(close patterns: '*.q_proj.weight')"), said
    said = str(unmatched("*.[qk]_prj.weight", pool, "no tensor"))
    assert said.endswith("(close patterns: '*.[qk]_proj.weight')"), said
    assert str(unmatched("*.zzz", pool, "no tensor")).endswith("check the pattern")


def test_warning_lines_escape_control_characters_as_error_lines_do(tmp_path: Path, key_file: Path) -> None:
    """A path quoted in a `warning:` line was printed raw: an escape sequence in it drove the terminal."""
    torch = pytest.importorskip("torch")
    odd_key = tmp_path / "k\x1b[2J\u202e.hex"
    odd_key.write_bytes(key_file.read_bytes())
    odd_key.chmod(0o644)  # readable by others: warned about, naming the file
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(128, 128), "b": torch.ones(128)}, src)  # no room for a header copy: warned about
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "s\x1b]0;x\x07.pt", "--key", odd_key])
    assert rc == 0 and err.count("warning: ") == 2, err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err, ascii(err)
    assert "k\\x1b[2J\\u202e.hex' is readable" in err and "s\\x1b]0;x\\x07.pt' keeps its seal header" in err, err


def test_warning_lines_mask_key_text_typed_as_a_path(
    tmp_path: Path, key_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`seal m.pt KEY.pt` (the key pasted where OUT belongs) masked the key in its OK line but printed it raw in the
    warnings that quote OUT (a .pt checkpoint's other entries left out; the header kept only in one entry)."""
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"w": torch.ones(128, 128)}, "epoch": 3}, "m.pt")  # an entry besides the weights: warned
    out = f"{key.secret.hex()}.pt"
    rc, stdout, err = helpers.run_cli(["seal", "m.pt", out, "--key", key_file])
    assert rc == 0 and err.count("warning: ") == 2, err
    assert key.secret.hex() not in stdout + err and key.secret.hex()[:32] not in err, err
    assert "'<key-like text, not shown>' holds the sealed weights alone" in err, err
    assert "'<key-like text, not shown>' keeps its seal header only in" in err, err


@pytest.mark.parametrize("kind", ["escape", "key"])
def test_eval_interrupted_line_escapes_and_masks_its_out_folder(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """eval's 'interrupted; finished configurations are kept in OUT/results.jsonl' line quoted --out raw: an escape
    sequence there drove the terminal, and key text typed as OUT was printed where every other line masks it."""
    pytest.importorskip("paramseal.evaluation")
    from paramseal import evaluation

    def stopped(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "run_eval", stopped)
    monkeypatch.chdir(tmp_path)
    out = "o\x1b[2J\u202e" if kind == "escape" else key.secret.hex()
    rc, _, err = helpers.run_cli(["eval", "--out", out])
    assert rc == 130 and "interrupted; finished configurations are kept in " in err, err
    assert "\x1b" not in err and "\u202e" not in err and key.secret.hex() not in err, ascii(err)
    shown = "o\\x1b[2J\\u202e" if kind == "escape" else "<key-like text, not shown>"
    assert f"kept in {shown}/results.jsonl: rerun" in err, ascii(err)


_ODD = "\x1b[2J\r\u202e"  # an escape sequence, a carriage return (a forged line) and a bidi override
_ODD_SHOWN = "\\x1b[2J\\r\\u202e"


def _no_raw_controls(text: str) -> None:
    assert not any(c in text for c in "\x1b\r\u202e"), ascii(text)


def test_result_lines_escape_the_paths_and_patterns_they_quote(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OK: and FAIL: lines on stdout quoted IN, OUT, the key file, --header-out and --tensors raw, where error,
    warning and report lines escape them: a name holding an escape sequence drove the terminal, a '\\r' forged a
    line. Each is escaped (errors.one_line) in keygen, seal (a file and a folder), verify, recover and attack."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    model = {"w": helpers.random_tensor(rng, np.float32, (256, 64))}
    np.savez(f"m{_ODD}.npz", **model)
    runs = {
        "keygen": (["keygen", f"k{_ODD}.key"], 0, f"OK: wrote key k{_ODD_SHOWN}.key (fingerprint "),
        "seal": (
            ["seal", f"m{_ODD}.npz", f"s{_ODD}.npz", "--key", key_file, "--header-out", f"h{_ODD}.json"],
            0,
            f"OK: sealed m{_ODD_SHOWN}.npz -> s{_ODD_SHOWN}.npz (1 tensor",
        ),
        "kept": (None, 0, f"OK: kept the seal header in h{_ODD_SHOWN}.json (for --header-from)"),
        "verify": (["verify", f"s{_ODD}.npz", "--key", key_file], 0, f"OK: s{_ODD_SHOWN}.npz is intact ("),
        "matched": (
            ["verify", f"s{_ODD}.npz", "--key", key_file, "--tensors", f"[w{_ODD}]"],
            0,
            f"OK: the tensors of s{_ODD_SHOWN}.npz matching '[w{_ODD_SHOWN}]' are intact",
        ),
        "intact": (
            ["recover", f"s{_ODD}.npz", f"r{_ODD}.npz", "--key", key_file],
            0,
            f"OK: s{_ODD_SHOWN}.npz was intact; written to r{_ODD_SHOWN}.npz",
        ),
        "attack": (
            ["attack", f"s{_ODD}.npz", f"a{_ODD}.npz", "--kind", "bitflip", "--n", "3"],
            0,
            f"OK: attacked s{_ODD_SHOWN}.npz -> a{_ODD_SHOWN}.npz (bitflip",
        ),
        "tampered": (["verify", f"a{_ODD}.npz", "--key", key_file], 1, f"FAIL: a{_ODD_SHOWN}.npz was tampered with ("),
        "recovered": (
            ["recover", f"a{_ODD}.npz", f"f{_ODD}.npz", "--key", key_file],
            0,
            f"OK: recovered a{_ODD_SHOWN}.npz -> f{_ODD_SHOWN}.npz (3 values restored)",
        ),
    }
    out = ""
    for what, (argv, code, shown) in runs.items():
        if argv is not None:
            rc, out, err = helpers.run_cli(argv)
            _no_raw_controls(out + err)
        assert rc == code and shown in out + err, (what, ascii(out), ascii(err))
    whole = {"w": np.zeros((256, 64), np.float32)}  # every value changed: beyond recovery
    sealed = dict(np.load(f"s{_ODD}.npz"))
    np.savez(f"z{_ODD}.npz", **{**sealed, **whole})
    rc, out, err = helpers.run_cli(["recover", f"z{_ODD}.npz", f"p{_ODD}.npz", "--key", key_file, "--allow-partial"])
    _no_raw_controls(out + err)
    assert rc == 2 and f"FAIL: z{_ODD_SHOWN}.npz cannot be fully recovered (" in out, ascii(out + err)
    assert f"partial result written to p{_ODD_SHOWN}.npz)" in out, ascii(out)


def test_a_sharded_seal_and_eval_escape_the_folders_they_quote(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sharded seal's OK line quoted IN and OUT raw, and eval's 'wrote' lines the files under --out."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(6)
    shards = {
        f"model-0000{i}-of-00002.safetensors": {f"t{i}": helpers.random_tensor(rng, np.float32, (64, 64))}
        for i in (1, 2)
    }
    helpers.write_checkpoint(tmp_path / f"c{_ODD}", shards)
    rc, out, err = helpers.run_cli(["seal", f"c{_ODD}", f"s{_ODD}", "--key", key_file])
    _no_raw_controls(out + err)
    assert rc == 0 and f"OK: sealed 2 shard(s) of c{_ODD_SHOWN} -> s{_ODD_SHOWN} (each" in out, ascii(out + err)

    pytest.importorskip("paramseal.evaluation")
    from types import SimpleNamespace

    from paramseal import evaluation

    def ran(battery: object, out: Path, **_: object) -> SimpleNamespace:
        return SimpleNamespace(
            runs=1, new_runs=1, configs=1, seconds=0.0, false_positives=0, files=[out / "results.md"]
        )

    monkeypatch.setattr(evaluation, "run_eval", ran)
    rc, out, err = helpers.run_cli(["eval", "--out", f"e{_ODD}"])
    _no_raw_controls(out + err)
    assert rc == 0 and f"  wrote e{_ODD_SHOWN}/results.md" in out, ascii(out + err)


def test_an_unexpected_error_escapes_what_its_exception_quotes(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An internal error's traceback and its 'error: internal error, no verdict' line printed the exception's text
    raw (a path or a tensor name it quotes): an escape sequence drove the terminal, a '\\r' forged a line."""
    from paramseal import files

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError(f"boom '{tmp_path}/m{_ODD}.npz'")

    monkeypatch.setattr(files, "verify_file", broken)
    np.savez(tmp_path / "m.npz", w=np.ones(64, np.float32))
    rc, out, err = helpers.run_cli(["verify", tmp_path / "m.npz", "--key", key_file, "--json"])
    _no_raw_controls(err)
    assert rc == 3 and "Traceback (most recent call last)" in err, err
    assert f"\nRuntimeError: boom '{tmp_path}/m{_ODD_SHOWN}.npz'\n" in err, ascii(err)
    assert f"error: internal error, no verdict on the model (RuntimeError: boom '{tmp_path}/m{_ODD_SHOWN}.npz')" in err
    assert f"(RuntimeError: boom '{tmp_path}/m{_ODD_SHOWN}.npz')" in json.loads(out)["error"], out  # as in err


def test_a_re_sharded_seal_recovered_into_a_pt_prints_its_warning_as_a_warning_line(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover FOLDER OUT.pt of a single-file seal re-sharded since writes the one file, and recover_file's
    ParamSealWarning for a .pt (a sealed graph digest kept only in its '.paramseal' entry) came out through
    Python's warnings handler: its source line, the OUT path raw (an internal error, exit 3, with warnings as
    errors). It is a `warning:` line, escaped, as a single file's recover prints it."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(12)
    model = {
        "emb.weight": helpers.random_tensor(rng, np.float32, (2000, 64)),
        "fc.weight": helpers.random_tensor(rng, np.float32, (512, 96)),
    }
    meta = {"format": "pt", "paramseal.graph": "0" * 64}  # the model's sealed metadata holds a graph digest
    helpers.write_st(tmp_path / "plain.safetensors", model, meta)
    assert helpers.run_cli(["seal", "plain.safetensors", "sealed.safetensors", "--key", key_file])[0] == 0
    tensors = helpers.read_st(tmp_path / "sealed.safetensors")[0]
    shards = {f"model-0000{i}-of-00002.safetensors": {n: tensors[n]} for i, n in enumerate(model, 1)}
    helpers.write_checkpoint(tmp_path / "resharded", shards, meta)  # as save_pretrained(max_shard_size=...) writes
    rc, out, err = helpers.run_cli(["recover", "resharded", f"o{_ODD}.pt", "--key", key_file])
    _no_raw_controls(out + err)
    assert rc == 0 and "ParamSealWarning" not in err and err.count("\n") == 1, ascii(err)
    assert err.startswith(f"warning: 'o{_ODD_SHOWN}.pt' keeps the sealed digest of its ONNX model's graph only"), err


def test_attack_escapes_the_tensor_names_it_lists(tmp_path: Path) -> None:
    """attack's lines of what changed ('  NAME: 3 value(s) in 3 block(s) changed') printed each tensor name raw, where
    verify's and recover's report lines escape it: a name holding an escape sequence drove the terminal."""
    name = f"w{_ODD}"
    np.savez(tmp_path / "m.npz", **{name: np.ones((64, 64), np.float32)})
    rc, out, err = helpers.run_cli(["attack", tmp_path / "m.npz", tmp_path / "a.npz", "--kind", "bitflip", "--n", "3"])
    _no_raw_controls(out + err)
    assert rc == 0 and f"\n  w{_ODD_SHOWN}: 3 value(s) in " in out, ascii(out + err)


def test_the_nan_tensors_note_masks_key_text_as_stdout_does(
    tmp_path: Path, key_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seal's 'note: N float tensor(s) hold NaN or Inf values ... (NAMES)' on stderr quoted the names unmasked, where
    stdout masks the command line's key-like words in every name it prints: key text typed as OUT, also a tensor's
    name, was printed in the note alone."""
    monkeypatch.chdir(tmp_path)
    secret = key.secret.hex()
    model = {secret: np.full((64, 64), np.nan, np.float32), "w": np.ones((64, 64), np.float32)}
    helpers.write_st(tmp_path / "m.safetensors", model)
    rc, out, err = helpers.run_cli(["seal", "m.safetensors", f"{secret}.safetensors", "--key", key_file])
    assert rc == 0 and "note: 1 float tensor(s) hold NaN or Inf values" in err, err
    assert secret not in out + err and "('<key-like text, not shown>')" in err, err


class _Terminal(io.StringIO):
    """A standard error that says it is a terminal: the progress line is shown."""

    def isatty(self) -> bool:
        return True


def test_the_progress_line_masks_key_text_as_every_other_line_does(
    tmp_path: Path, key_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The progress line on a terminal escaped each tensor name but did not mask the command line's key-like words
    in it, as stdout, warning and note lines do: key text typed as OUT, also a tensor's name, was shown there (its
    first 40 characters) while seal, verify and recover ran (as --tensors too)."""
    from paramseal.cli import main

    monkeypatch.chdir(tmp_path)
    secret = key.secret.hex()
    model = {secret: np.ones((64, 64), np.float32), "w": np.ones((64, 64), np.float32)}
    helpers.write_st(tmp_path / "m.safetensors", model)
    sealed = f"s{secret}.safetensors"
    for argv in (  # key text typed as OUT, or as --tensors: in no existing file's name
        ["seal", "m.safetensors", sealed],
        ["verify", sealed, "--tensors", secret],
        ["recover", sealed, f"r{secret}.safetensors"],
    ):
        err = _Terminal()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main([*argv, "--key", str(key_file)]) == 0, err.getvalue()
        shown = err.getvalue()
        assert f"\r{argv[0]} [" in shown, ascii(shown)  # the progress line was shown
        assert secret[:40] not in shown and "<key-like text, not shown>" in shown, (argv, shown)


# the program, with a library it calls warning (as numpy's or torch's code does) and quoting what it was given
_WARNED_RUN = """
import sys, warnings
from paramseal import cli
run = cli.run
def warned(args):
    warnings.warn(f"odd input {' '.join(sys.argv[1:])}", UserWarning)
    return run(args)
cli.run = warned
sys.exit(cli.main())
"""


@pytest.mark.parametrize("verb", ["keygen", "seal", "verify", "recover", "inspect", "attack"])
def test_other_libraries_warnings_are_escaped_and_masked_warning_lines(
    tmp_path: Path, key_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    """A warning from numpy, torch or another library during a command came out through Python's own handler: its
    text (which may quote a tensor name or a path) raw, an escape sequence driving the terminal, a '\\r' forging a
    line, key text typed on the command line shown. It is a 'warning:' line, escaped and masked, and still shown."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    secret = key.secret.hex()
    np.savez("m.npz", w=np.ones((256, 64), np.float32))
    assert helpers.run_cli(["seal", "m.npz", "s.npz", "--key", key_file])[0] == 0
    odd = f"{secret}{_ODD}"  # key text typed as OUT, with an escape sequence, a '\\r' and a bidi override
    argv = {
        "keygen": ["keygen", f"k{odd}.key"],
        "seal": ["seal", "m.npz", f"o{odd}.npz", "--key", str(key_file)],
        "verify": ["verify", "s.npz", "--key", str(key_file), "--tensors", f"[w{_ODD}]"],
        "recover": ["recover", "s.npz", f"o{odd}.npz", "--key", str(key_file)],
        "inspect": ["inspect", "s.npz"],
        "attack": ["attack", "s.npz", f"o{odd}.npz", "--kind", "bitflip", "--n", "3"],
    }[verb]
    done = subprocess.run([sys.executable, "-c", _WARNED_RUN, *argv], capture_output=True, timeout=120)
    out, err = done.stdout.decode(), done.stderr.decode()  # as bytes: text=True reads a '\\r' as a line's end
    _no_raw_controls(out + err)
    assert done.returncode == 0 and secret not in out + err, ascii(err)
    line = next((x for x in err.split("\n") if "odd input" in x), "")
    assert line.startswith(f"warning: UserWarning: odd input {verb} "), ascii(err)
    assert line.endswith(" (<string>:6)"), ascii(err)  # where it was raised, as Python says it
    if verb == "verify":
        assert line.endswith(f" --tensors [w{_ODD_SHOWN}] (<string>:6)"), ascii(err)
    elif verb != "inspect":  # the word typed as OUT, masked whole as on stdout
        assert " <key-like text, not shown> " in line and "OK: " in out, ascii(err)
