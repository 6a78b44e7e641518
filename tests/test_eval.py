"""``paramseal eval``: outputs with sane values, resume, the CLI, missing extras, the models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import helpers
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("torch")

from paramseal.errors import UsageError  # noqa: E402
from paramseal.evaluation import BATTERIES, Battery, Plan, run_eval  # noqa: E402
from paramseal.evaluation.models import sentences  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("eval")
    summary = run_eval(BATTERIES["tiny"], out, docs=out / "page" / "results.md", progress=False)
    return out, summary


def test_tiny_battery_writes_json_markdown_png_with_sane_values(tiny: tuple[Path, object]) -> None:
    out, summary = tiny
    data = json.loads((out / "results.json").read_text())
    recs = data["records"]
    runs = {r["id"]: r for r in recs if r["type"] == "run"}
    configs = [r for r in recs if r["type"] == "config"]
    assert len(runs) == BATTERIES["tiny"].size() == summary.runs  # type: ignore[attr-defined]
    assert summary.false_positives == 0  # type: ignore[attr-defined]
    for c in configs:
        assert c["clean_verify_status"] == "intact" and c["clean_verify_flagged_blocks"] == 0
        assert 0.9 < c["metric_sealed"]["accuracy"] <= 1.0
        assert 0 < c["measured_relative_change"] <= c["bound_relative_change"] + 1e-12
    for r in runs.values():
        assert r["detected"] is True, r["id"]
        assert r["wall_s"] >= 0
        loc = r.get("localisation")
        if loc and loc["block"]["precision"] is not None:
            assert loc["block"]["precision"] == 1.0  # never a block flagged that was not tampered
            assert loc["block"]["recall"] == 1.0
    flips = runs["mlp/F32/standard/s0/bitflip_n=10"]
    assert flips["changed_parameters"] == 10 and flips["recovered"] is True
    assert flips["localisation"]["parameter"] == {"precision": 1.0, "recall": 1.0, "hit": 10, "flagged": 10, "true": 10}
    assert flips["metric_recovered"] == configs[0]["metric_sealed"]
    scattered = runs["mlp/F32/standard/s0/random-modify_p=0.05"]
    # 5% scattered is within the irs code's capacity (fp32): recovered, and back to the sealed metric
    assert scattered["recovered"] is True and scattered["detected"] is True
    assert scattered["metric_recovered"] == configs[0]["metric_sealed"]
    assert "refused" in runs["mlp/F32/standard/s0/truncate"]["detection"]
    table = (out / "results.md").read_text()
    assert "| bitflip n=10 |" in table and "1/1" in table
    for name in ("recovery_mlp_F32.png", "metric_mlp_F32_standard.png", "heatmap_mlp.png"):
        raw = (out / name).read_bytes()
        assert raw.startswith(PNG) and 2_000 < len(raw) < 200_000
    page = (out / "page" / "results.md").read_text()
    for section in (
        "Embedding impact",
        "False positives",
        "Recovery rate",
        "What each attack gives",
        "Against the published claims",
        "Gao",
        "RADAR",
        "Guan",
        "Where ParamSeal loses",
    ):
        assert section in page
    assert "](../recovery_mlp_F32.png)" in page


def test_header_attacks_are_verified_and_recovered_as_files_are(tmp_path: Path) -> None:
    # eval recorded a stripped header as "detected, not recovered" without verifying: a model large enough
    # to carry its header in its weights verifies intact and recovers bit-exactly, an edited one recovers too
    import numpy as np

    import paramseal
    from paramseal.attacks import AttackSpec, attack
    from paramseal.evaluation._runner import _Config, _header_attacked
    from paramseal.formats import Loaded
    from paramseal.header import METADATA_KEY

    key = paramseal.Key.generate()
    w = {"w": np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)}
    s = paramseal.seal(w, key)
    cfg = _Config(w, Loaded(dict(s.tensors), {METADATA_KEY: s.header_json}), s.header_json, {})
    got = {}
    for mode in ("strip", "edit"):
        attacked, _ = attack(cfg.sealed, AttackSpec("metadata", mode=mode))
        got[mode] = _header_attacked(cfg, attacked, key)
    noted = "intact, noted: the seal header was read from the weights"  # the weights are intact; verify says how
    assert got["strip"] == {"status": "intact", "detected": True, "detection": noted, "recovered": True}
    assert got["edit"] == {"status": "tampered", "detected": True, "detection": "tampered", "recovered": True}


def test_tiny_header_strip_is_refused_not_assumed(tiny: tuple[Path, object]) -> None:
    out, _ = tiny
    runs = {r["id"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    strip = runs["mlp/F32/standard/s0/metadata_mode=strip"]
    # the MLP is too small to carry its header in its weights: verify refuses it (measured, not assumed)
    assert strip["detection"] == "refused: HeaderOnlyInMetadata" and strip["recovered"] is False
    page = (out / "page" / "results.md").read_text()
    assert (
        "**Edited or stripped ParamSeal header**: strip: 2/2 detected, 0/2 recovered bit-exactly "
        "(verify: 2 refused: HeaderOnlyInMetadata)"
    ) in page


def test_page_claims_only_what_the_records_show(tiny: tuple[Path, object], tmp_path: Path) -> None:
    # the page said "block precision is 1.00 throughout" and "truncated files are refused" whatever was measured
    from paramseal.evaluation import report

    out, _ = tiny
    recs = json.loads((out / "results.json").read_text())["records"]
    page = report.write_page(recs, tmp_path / "a.md", [], command="c", wall_s=0, battery="tiny")
    assert "block precision is 1.00 throughout" in page.read_text()
    assert "**Truncated files**: 2/2 refused with a clean error; 0/2 recovered." in page.read_text()
    for r in recs:
        if r.get("id") == "mlp/F32/standard/s0/bitflip_n=10":
            r["localisation"]["block"]["flagged"] += 1  # a block flagged that held no change
        if r.get("kind") == "truncate":
            r["detection"], r["detected"] = "verify returned tampered", True
    text = report.write_page(recs, tmp_path / "b.md", [], command="c", wall_s=0, battery="tiny").read_text()
    assert "1.00 throughout" not in text and "block precision 0." in text
    assert "**Truncated files**: 0/2 refused" in text


def test_results_are_written_atomically(
    tiny: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # results.json, results.md and the page were written in place: a full disk left them cut short
    from paramseal.evaluation import report

    out, _ = tiny
    recs = json.loads((out / "results.json").read_text())["records"]
    page = report.write_page(recs, tmp_path / "r.md", [], command="c", wall_s=0, battery="tiny")
    before = page.read_text()

    def half_then_fail(self: Path, text: str, *a: object, **k: object) -> int:
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError):
        report.write_page(recs, page, [], command="c", wall_s=0, battery="tiny")
    monkeypatch.undo()
    assert page.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_resume_skips_finished_runs(tiny: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = tiny
    again = run_eval(BATTERIES["tiny"], out, progress=False)
    assert again.new_runs == 0 and again.runs == BATTERIES["tiny"].size()
    # an interrupted run: drop two finished BF16 lines (and tear the last one); BF16 is redone on a new seal, F32 not
    lines = (out / "results.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if "BF16" not in ln or ("zero-tensor" not in ln and "bitflip" not in ln)]
    (out / "results.jsonl").write_text("\n".join(keep) + '\n{"id": "torn')
    redo = run_eval(BATTERIES["tiny"], out, progress=False)
    assert redo.new_runs == BATTERIES["tiny"].size() // 2
    ids = [json.loads(ln)["id"] for ln in (out / "results.jsonl").read_text().splitlines() if ln.endswith("}")]
    assert set(ids) == {r["id"] for r in json.loads((out / "results.json").read_text())["records"]}
    assert len(ids) - len(set(ids)) == BATTERIES["tiny"].size() // 2 - 2 + 1  # BF16's kept runs and config, redone


def test_resume_never_mixes_two_seals(tmp_path: Path) -> None:
    # each session seals with a fresh key: a resumed config kept the first seal's record (metric_sealed, the
    # measured change, the clean verify) while its new runs were made on the second seal
    import io

    from paramseal.evaluation import _runner, metrics
    from paramseal.evaluation import battery as bat

    b = Battery(
        "t",
        (
            Plan(
                "mlp",
                ("F32", "BF16"),
                ("standard",),
                (0,),
                (("bitflip", {"n": 10}), ("random-modify", {"fraction": 0.001}), ("zero-tensor", {})),
            ),
        ),
    )
    first = run_eval(b, tmp_path, progress=False, stream=io.StringIO())
    assert first.new_runs == b.size() == 6
    # interrupted after F32's config and first run: the rest of the file never written, the last line torn
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    before = {json.loads(ln)["id"]: json.loads(ln) for ln in lines}
    cut = [ln for ln in lines if "BF16" in ln or "bitflip" in ln or '"config"' in ln]
    (tmp_path / "results.jsonl").write_text("\n".join(cut) + '\n{"id": "mlp/F32/sta')
    used: dict[str, tuple[str, float]] = {}  # run id -> the seal it was made on: its header, its measured change
    one = _runner.Runner._one

    def spy(
        self: _runner.Runner, model: str, dtype: str, level: str, seed: int, a: bat.Attack, cfg: _runner._Config
    ) -> dict[str, object]:
        change = metrics.max_relative_change(cfg.original, cfg.sealed.tensors)
        used[bat.run_id(model, dtype, level, seed, a)] = (cfg.header, change)
        return one(self, model, dtype, level, seed, a, cfg)

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_runner.Runner, "_one", spy)
        again = run_eval(b, tmp_path, progress=False, stream=err)
    recs = {r["id"]: r for r in json.loads((tmp_path / "results.json").read_text())["records"]}
    f32 = [r for i, r in recs.items() if "F32" in i]
    # F32 is redone whole on one seal: its config record describes the seal its runs were made on
    assert set(used) == {i for i in recs if i.startswith("mlp/F32/")} and len(set(used.values())) == 1
    (header, change), *_ = used.values()
    assert recs["config:mlp/F32/standard"]["measured_relative_change"] == change
    assert recs["config:mlp/F32/standard"] != before["config:mlp/F32/standard"]
    assert {r["seal"] for r in f32} == {_runner.header_digest(header)} and len(f32) == 4
    assert (
        recs["mlp/F32/standard/s0/bitflip_n=10"]["metric_recovered"] == recs["config:mlp/F32/standard"]["metric_sealed"]
    )
    assert "mlp/F32/standard" in err.getvalue() and "another seal" in err.getvalue()
    # BF16 was complete: kept as it was, and not sealed again
    assert again.new_runs == 3 and "BF16" not in err.getvalue()
    assert all(recs[i] == before[i] for i in recs if "BF16" in i)


def test_cli_eval_custom_battery(tmp_path: Path) -> None:
    rc, out, err = helpers.run_cli(
        [
            "eval",
            "--model",
            "mlp",
            "--dtype",
            "F16",
            "--seeds",
            "1",
            "--out",
            tmp_path / "o",
            "--docs",
            tmp_path / "r.md",
        ]
    )
    assert rc == 0, err
    assert "no false positives" in out and "wrote" in out
    page = (tmp_path / "r.md").read_text()
    assert f"paramseal eval --model mlp --dtype F16 --seeds 1 --out {tmp_path / 'o'}" in page
    recs = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    kinds = {r["kind"] for r in recs if r["type"] == "run"}
    assert {"bfa", "finetune", "swap", "quantize", "metadata", "truncate", "lsb-rewrite"} <= kinds


def test_cli_eval_bad_options_exit_3(tmp_path: Path) -> None:
    for argv in (
        ["eval", "--out", tmp_path, "--battery", "huge"],
        ["eval", "--out", tmp_path, "--battery", ""],  # an unset variable: it ran the default battery
        ["eval", "--out", tmp_path, "--model", "gpt"],
        ["eval", "--out", tmp_path, "--model", "mlp", "--dtype", "F8"],
    ):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "choose" in err, err
    rc, _, err = helpers.run_cli(["eval", "--out", tmp_path, "--dtype", "F16"])
    assert rc == 3 and "go with --model" in err
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"foo": 1}\n', "line 1 is no run or configuration record"),
        (b"[1, 2]\n", "line 1 is no run or configuration record"),
        (b'{"id": "x", "type": "config"}\n{"id": 3, "type": "run"}', "line 2 is no run or configuration record"),
        (b"\xff\xfe binary\n", "not UTF-8"),
        (b"model,dtype,accuracy\nmlp,F32,0.97\n", "line 1 is not JSON"),  # a CSV was appended to
        (b'{"id": "x", "type": "config"}\nnotes: rerun\n', "line 2 is not JSON"),
    ],
)
def test_cli_eval_refuses_a_results_file_it_did_not_write(tmp_path: Path, content: bytes, why: str) -> None:
    # --out holds another tool's results.jsonl: exit 3 before any run, and that file is left as it was
    (tmp_path / "results.jsonl").write_bytes(content)
    rc, out, err = helpers.run_cli(["eval", "--out", tmp_path])
    assert rc == 3 and why in err and "not a results file of paramseal eval" in err, err
    assert (tmp_path / "results.jsonl").read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"] and not out


def test_a_record_cut_short_is_skipped_wherever_a_resume_left_it(tmp_path: Path) -> None:
    """Resuming ends a torn last line and appends after it: a second resume finds it mid-file."""
    from paramseal.evaluation._runner import Runner

    recs = [{"id": "a", "type": "config"}, {"id": "b", "type": "run"}]
    (tmp_path / "results.jsonl").write_text(f'{json.dumps(recs[0])}\n{{"id": "to\n{json.dumps(recs[1])}\n{{"id')
    assert Runner(tmp_path).done() == {r["id"]: r for r in recs}
    assert Runner(tmp_path).done() == {r["id"]: r for r in recs}  # the torn last line was ended, now mid-file


def test_missing_extra_names_the_pip_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, _, err = helpers.run_cli(["eval", "--out", tmp_path / "o"])
    assert rc == 3 and "pip install 'paramseal[eval]'" in err
    assert not (tmp_path / "o").exists()


def test_sentence_set_is_large_and_varied() -> None:
    s = sentences()
    assert len(s) >= 200 and len(set(s)) == len(s)
    lengths = sorted(map(len, s))
    # short and long sentences both (the set measured at 3 to 85 characters), many openings
    assert lengths[0] <= 10 and lengths[-1] >= 60 and len({x.split()[0] for x in s}) >= 30


@pytest.mark.slow
def test_cnn_and_minilm_models(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("mlxtend")
    b = Battery(
        "t",
        (
            Plan("cnn", ("F32",), ("standard",), (0,), (("bfa", {"n": 2}), ("zero-tensor", {}))),
            Plan("minilm", ("BF16",), ("strong",), (0,), (("backdoor-row", {"n": 1}),)),
        ),
    )
    s = run_eval(b, tmp_path, progress=False)
    recs = json.loads((tmp_path / "results.json").read_text())["records"]
    cfg = {r["model"]: r for r in recs if r["type"] == "config"}
    assert cfg["cnn"]["metric_sealed"]["accuracy"] > 0.9
    assert cfg["minilm"]["metric_sealed"]["cos_min"] > 0.95
    assert s.false_positives == 0


@pytest.mark.slow
def test_docs_battery(tmp_path: Path) -> None:
    # the docs page goes beside the run's folder, as in `--out docs/results --docs docs/results.md`
    s = run_eval(BATTERIES["docs"], tmp_path / "results", docs=tmp_path / "results.md", progress=False)
    assert s.false_positives == 0 and s.new_runs == s.runs
    assert (tmp_path / "results.md").read_text().count("|") > 100  # the page with its tables


def test_eval_output_folders_that_cannot_be_used_are_usage_errors(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, msg in (
        (["--out", afile], "is a file, not a folder"),
        (["--out", afile / "sub"], "cannot write the results in"),
        (["--out", tmp_path / "ev", "--docs", tmp_path / "missing" / "r.md"], "its folder does not exist"),
    ):
        rc, _, err = helpers.run_cli(["eval", "--battery", "tiny", *argv])
        assert rc == 3 and msg in err and "Traceback" not in err, err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "ev").exists()


def test_cli_eval_docs_page_inside_the_out_folder_it_makes(tmp_path: Path) -> None:
    """`eval --out ev --docs ev/page.md` was refused ('its folder does not exist; create it first') of the
    folder eval itself makes, which the API (`run_eval(..., docs=out / 'page.md')`) accepts."""
    out = tmp_path / "ev"
    rc, _, err = helpers.run_cli(["eval", "--battery", "tiny", "--out", out, "--docs", out / "page.md"])
    assert rc == 0, err
    page = (out / "page.md").read_text()
    assert "[`results.json`](results.json)" in page  # links from the page's own folder


def _scattered(model: str, level: str, rates: dict[float, bool]) -> list[dict[str, object]]:
    """Synthetic scattered random-modify runs: one seed per rate, recovered or not."""
    return [
        {
            "type": "run",
            "model": model,
            "dtype": "F32",
            "level": level,
            "kind": "random-modify",
            "label": f"random-modify p={p}",
            "options": {"fraction": p},
            "tampering_rate": p,
            "changed_blocks": 50,
            "total_blocks": 100,
            "detected": True,
            "recovered": ok,
        }
        for p, ok in rates.items()
    ]


def _config(model: str, level: str, **code: object) -> dict[str, object]:
    return {
        "id": f"config:{model}/F32/{level}",
        "type": "config",
        "model": model,
        "dtype": "F32",
        "level": level,
        "k": 8,
        "metric_original": {"accuracy": 0.9},
        "metric_sealed": {"accuracy": 0.9},
        **code,
    }


@pytest.mark.parametrize(
    ("top", "ok", "want"),
    [(0.2, False, "loses"), (0.2, True, "ties"), (0.3, True, "wins"), (0.1, False, "loses")],
)
def test_gao_verdict_follows_the_measured_scattered_rate(top: float, ok: bool, want: str) -> None:
    # the page said "ParamSeal loses on scattered modification" next to 20% recovered at strong
    from paramseal.evaluation import _findings

    cfg = _config("mlp", "strong", code="irs4", contiguous_bound=0.34, scattered_bound=0.27)
    runs = _scattered("mlp", "strong", {0.01: True, 0.05: True, top: ok})
    text = _findings._claims(runs, {cfg["id"]: cfg})
    best = max(p for p, o in {0.05: True, top: ok}.items() if o)
    assert _findings.verdict(best, _findings.GAO_SCATTERED, fail=None if ok else top) == want
    assert f"ParamSeal **{want}** on mlp" in text
    assert sum(f"**{v}**" in text for v in ("wins", "ties", "loses")) == 1
    losses = _findings._losses(runs, {cfg["id"]: cfg})
    assert ("below Gao et al.'s 20%" in losses) == (want == "loses")


def test_scattered_loss_names_the_code_and_which_side_of_its_bound() -> None:
    from paramseal.evaluation import _findings

    lanes = _config("mlp", "light", code="lanes", contiguous_bound=0.1111, scattered_bound=0.001838)
    irs = _config("cnn", "strong", code="irs4", contiguous_bound=0.3432, scattered_bound=0.2746)
    runs = _scattered("mlp", "light", {0.001: True, 0.002: False}) + _scattered(
        "cnn", "strong", {0.05: True, 0.2: False}
    )
    text = _findings._losses(runs, {c["id"]: c for c in (lanes, irs)})
    assert "mlp light (lanes) 0.1% (fails at 0.2%): at 0.2%, 50% of blocks were tampered, and 0.2% is above" in text
    assert "cnn strong (irs4) 5% (fails at 20%): at 20%, 50% of blocks were tampered, and 20% is below" in text
    assert "the code's scattered bound 27.5% (contiguous 34.3%)" in text


def test_bound_shown_is_the_one_of_the_code_the_model_was_sealed_with() -> None:
    # section 3 gave the lane code's (k - 1/2)/(b - 1/2) for fp32 standard/strong, which irs4 seals
    import numpy as np

    from paramseal import _inspect, _strata, levels
    from paramseal.evaluation import _tables
    from paramseal.evaluation._runner import seal_code
    from paramseal.header import peek_header
    from paramseal.keys import Key
    from paramseal.seal import SealConfig

    w = np.random.default_rng(0).standard_normal(120_000).astype(np.float32)
    configs, runs = {}, []
    for dt, cast in (("F32", np.float32), ("F16", np.float16)):
        for level in ("light", "standard", "strong"):
            sealed = SealConfig(level=level).seal({"w": w.astype(cast)}, Key.generate())
            k = levels.bits_for(dt, level, None)
            got = seal_code(sealed.header_json, dt, k)
            h = peek_header(sealed.header_json)
            if h["code"] == _strata.CODE_NAME:
                assert (dt, level) in (("F32", "standard"), ("F32", "strong"))
                cap = _strata.capacity(k, h["outer_host"])
                assert got["code"] == "irs4" and got["outer_host"] == h["outer_host"]
                assert got["contiguous_bound"] == round(cap["contiguous_bound"], 4)
                assert got["scattered_bound"] == round(cap["scattered_radius"], 4)
                assert got["contiguous_bound"] != round(levels.capacity(dt, k).erasure_bound, 4)
            else:
                assert got["code"] == "lanes"
                assert got["contiguous_bound"] == round(levels.capacity(dt, k).erasure_bound, 4)
            # the same figure inspect prints for the sealed file
            assert got["contiguous_bound"] == _inspect.caps({dt: k}, h.get("outer_host"))[dt]["contiguous_bound"]
            c = {**_config("mlp", level, **got), "dtype": dt, "id": f"config:mlp/{dt}/{level}"}
            configs[c["id"]] = c
            runs += [{**r, "dtype": dt} for r in _scattered("mlp", level, {0.001: True})]
    table = _tables._threshold_table(runs, configs)
    for c in configs.values():
        row = f"| mlp | {c['dtype']} | {c['level']} | {c['code']} | {_tables._pct(c['contiguous_bound'])} |"
        assert row in table
    assert "| mlp | F32 | standard | irs4 |" in table and "| mlp | F32 | light | lanes |" in table
    del configs["config:mlp/F32/light"]["code"]  # a record from before the battery noted its code
    assert "| mlp | F32 | light | not recorded | – | – |" in _tables._threshold_table(runs, configs)


def test_header_rows_count_a_noted_strip_as_detected() -> None:
    from paramseal.evaluation import _findings

    noted = "intact, noted: the seal header was read from the weights"
    meta = [
        {"kind": "metadata", "options": {"mode": "strip"}, "detected": True, "detection": noted, "recovered": True},
        {
            "kind": "metadata",
            "options": {"mode": "strip"},
            "detected": True,
            "detection": "refused: X",
            "recovered": False,
        },
        {"kind": "metadata", "options": {"mode": "edit"}, "detected": True, "detection": "tampered", "recovered": True},
    ]
    text = _findings._header_text(meta)
    assert "strip: 2/2 detected, 1/2 recovered bit-exactly (verify: 1 " + noted in text
    assert "edit: 1/1 detected, 1/1 recovered" in text and "Weights changed in 0/3" in text


@pytest.mark.parametrize("rates", [{0.01: True, 0.05: True}, {0.05: True, 0.3: False}])
def test_gao_verdict_is_no_loss_where_nothing_failed_up_to_their_figure(rates: dict[float, bool]) -> None:
    # 5% recovered and no failure at or below 20%: nothing measured says ParamSeal loses
    from paramseal.evaluation import _findings

    cfg = _config("mlp", "strong", code="irs4", contiguous_bound=0.34, scattered_bound=0.27)
    runs = _scattered("mlp", "strong", rates)
    text = _findings._claims(runs, {cfg["id"]: cfg})
    assert "**loses**" not in text and "has **no verdict** on mlp (strong: 5%" in text
    assert "nothing failed at or below their 20%" in text
    assert "below Gao et al.'s 20%" not in _findings._losses(runs, {cfg["id"]: cfg})


def test_rates_that_all_failed_were_tested() -> None:
    # every scattered rate failed: the section 3 table said "none tested", the headline left the model out
    from paramseal.evaluation import _findings, _tables

    cfgs = {}
    for m in ("mlp", "cnn"):
        c = _config(m, "standard", code="irs4", contiguous_bound=0.23, scattered_bound=0.18, total_blocks=100)
        cfgs[c["id"]] = {**c, "clean_verify_status": "intact", "clean_verify_flagged_blocks": 0}
    runs = _scattered("mlp", "standard", {0.01: False, 0.05: False}) + _scattered("cnn", "standard", {0.05: True})
    table = _tables._threshold_table(runs, cfgs)
    assert "| mlp | F32 | standard | irs4 | 23% | 18% | none | 1% | not tested | – | not tested | – |" in table
    assert "none tested" not in table
    assert "scattered single values none–5% at standard" in _findings._headline(runs, cfgs)
    assert "ParamSeal **loses** on mlp (standard: none, fails at 1%)" in _findings._claims(runs, cfgs)


def test_whole_model_bullet_names_only_the_attacks_it_counts() -> None:
    from paramseal.evaluation import _findings

    cfg = _config("mlp", "standard", code="irs4", contiguous_bound=0.23, scattered_bound=0.18)
    run = {"type": "run", "model": "mlp", "dtype": "F32", "level": "standard", "options": {}, "detected": True}
    runs = [
        {**run, "kind": "noise", "label": "noise", "tampering_rate": 1.0, "changed_blocks": 100, "total_blocks": 100},
        {**run, "kind": "prune", "label": "prune", "tampering_rate": 0.1, "changed_blocks": 10, "total_blocks": 100},
    ]
    text = _findings._losses(runs, {cfg["id"]: cfg})
    assert "* **Whole-model changes** (noise over most values): 0/1 runs recovered" in text
    assert "prun" not in text and "fine-tun" not in text


def test_claims_without_scattered_runs_end_the_sentence() -> None:
    from paramseal.evaluation import _findings

    cfg = _config("mlp", "standard", code="irs4", contiguous_bound=0.23, scattered_bound=0.18)
    assert "no verdict. Contiguous runs (F32)" in _findings._claims([], {cfg["id"]: cfg})


def test_a_failing_rate_says_how_many_seeds_still_recovered() -> None:
    """'fails at 20%' read as every seed failing where two of three recovered."""
    from paramseal.evaluation import _findings, _tables

    cfg = _config("mlp", "strong", code="irs4", contiguous_bound=0.34, scattered_bound=0.27)
    runs = _scattered("mlp", "strong", {0.05: True})
    for seed, ok in enumerate((True, False, True)):  # three seeds at 20%: one fails
        runs += [{**r, "seed": seed} for r in _scattered("mlp", "strong", {0.2: ok})]
    best, fail, seeds = _tables.thresholds(runs)[("mlp", "F32", "strong", "scattered")]
    assert (best, seeds) == (0.05, (2, 3)) and fail == pytest.approx(0.2)
    text = _findings._claims(runs, {cfg["id"]: cfg})
    assert "mlp 5% (fails at 20% (2/3 seeds recovered))" in text
    one = _scattered("mlp", "strong", {0.05: True, 0.2: False})  # one seed: no count shown
    assert "fails at 20%)" in _findings._claims(one, {cfg["id"]: cfg})


def test_a_rate_recovered_above_a_failing_one_does_not_hide_the_failure() -> None:
    """'recovered up to 5%, no higher rate tested' while 1% had failed: every rate up to the figure must recover."""
    from paramseal.evaluation import _findings, _tables

    cfg = _config("mlp", "standard", code="irs4", contiguous_bound=0.23, scattered_bound=0.18)
    runs = _scattered("mlp", "standard", {0.005: True, 0.01: False, 0.05: True})
    best, fail, seeds = _tables.thresholds(runs)[("mlp", "F32", "standard", "scattered")]
    assert (best, fail, seeds) == (0.005, 0.01, (0, 1))
    table = _tables._threshold_table(runs, {cfg["id"]: cfg})
    assert "| mlp | F32 | standard | irs4 | 23% | 18% | 0.5% | 1% |" in table
    top = _scattered("mlp", "standard", {0.1: False, 0.3: True})  # a verdict from 30% would say it wins
    assert _tables.thresholds(top)[("mlp", "F32", "standard", "scattered")][:2] == (None, 0.1)
    assert "**loses** on mlp (standard: none, fails at 10%)" in _findings._claims(top, {cfg["id"]: cfg})


def test_a_flagged_no_op_run_counts_as_a_false_positive(tmp_path: Path) -> None:
    # an fp16 round trip of an fp16 model changes nothing: the page counted its verify flagging it as a false
    # positive, while the summary (and so the CLI's "no false positives", exit 0) counted only the configs
    import io

    b = Battery("t", (Plan("mlp", ("F16",), ("standard",), (0,), (("quantize", {"mode": "fp16"}),)),))
    first = run_eval(b, tmp_path, progress=False, stream=io.StringIO())
    assert first.false_positives == 0
    lines = [json.loads(ln) for ln in (tmp_path / "results.jsonl").read_text().splitlines()]
    (noop,) = [r for r in lines if r.get("type") == "run"]
    assert noop["noop"] is True and noop["detected"] is False
    noop["detected"] = True  # as if verify had flagged the untampered copy
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    again = run_eval(b, tmp_path, progress=False, stream=io.StringIO())
    assert again.new_runs == 0 and again.false_positives == 1


def test_conflicting_or_unusable_eval_options_are_refused_before_any_run(tmp_path: Path) -> None:
    # a folder as --docs failed only after the whole battery had run (and written OUT); --battery next to
    # --model was silently ignored (a "full" run measured every attack on one model instead)
    (tmp_path / "page").mkdir()
    for argv, msg in (
        (["--battery", "tiny", "--docs", tmp_path / "page"], "is a directory"),
        (["--battery", "full", "--model", "mlp"], "--battery and --model"),
        (["--battery", "", "--model", "mlp"], "--battery and --model"),
    ):
        rc, _, err = helpers.run_cli(["eval", "--out", tmp_path / "o", *argv])
        assert rc == 3 and msg in err and "Traceback" not in err, err
        assert not (tmp_path / "o").exists()


def test_whole_tensor_attacks_at_one_fraction_are_not_counted_as_seeds() -> None:
    # replace-tensor and zero-tensor share the "whole tensors" family: at the same fraction, one seed of each was
    # reported as "4.88% (0/2 seeds recovered)", at the mean of two attacks' tampering rates
    from paramseal.evaluation import _tables, plots

    cfg = _config("mlp", "standard", code="lanes", contiguous_bound=0.03, scattered_bound=0.0005)
    run = {"type": "run", "model": "mlp", "dtype": "F32", "level": "standard", "seed": 0, "detected": True}
    runs = [
        {**run, "kind": k, "label": f"{k} p=0.1", "options": {"fraction": 0.1}, "tampering_rate": x, "recovered": False}
        for k, x in (("replace-tensor", 0.0489), ("zero-tensor", 0.0488))
    ]
    best, fail, seeds = _tables.thresholds(runs)[("mlp", "F32", "standard", "whole")]
    assert (best, fail, seeds) == (None, 0.0488, (0, 1))
    assert _tables._threshold_table(runs, {cfg["id"]: cfg}).endswith("| not tested | – | none | 4.88% |")
    # the figures' points too: one per attack, each at its own rate (it drew one at 50% recovered)
    runs[0] = {**runs[0], "recovered": True, "fraction_restored": 1.0}
    assert plots._sweep(runs, "whole") == [(0.0488, 0.0, 0.0), (0.0489, 1.0, 1.0)]


def test_recovery_legend_names_curves_drawn_only_in_later_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the legend was read from the first panel only: minilm F16 light has no sweep, so its figure had coloured
    # curves and a legend naming only the bound lines
    from matplotlib.figure import Figure

    from paramseal.evaluation import plots

    configs = [
        {**_config("mlp", lv, code="lanes", contiguous_bound=0.1, scattered_bound=0.001)}
        for lv in ("light", "standard")
    ]
    runs = _scattered("mlp", "standard", {0.001: True, 0.01: False})
    seen: list[str] = []
    legend = Figure.legend

    def spy(self: Figure, handles: list[object], labels: list[str], *a: object, **k: object) -> object:
        seen.extend(labels)
        return legend(self, handles, labels, *a, **k)

    monkeypatch.setattr(Figure, "legend", spy)
    assert plots.recovery_curves(runs, configs, "mlp", "F32", tmp_path / "r.png")
    assert "random-modify (scattered values)" in seen and len(seen) == len(set(seen))


def test_figures_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # savefig wrote the PNGs in place: a full disk or an interrupt left a figure cut short
    from matplotlib.figure import Figure

    from paramseal.evaluation import plots

    cfg = _config("mlp", "standard", code="lanes", contiguous_bound=0.1, scattered_bound=0.001)
    runs = [{**r, "metric_attacked": {"accuracy": 0.5}} for r in _scattered("mlp", "standard", {0.01: False})]
    png = tmp_path / "r.png"
    assert plots.recovery_curves(runs, [cfg], "mlp", "F32", png)
    before = png.read_bytes()

    def half_then_fail(self: Figure, fname: object, *a: object, **k: object) -> None:
        with open(str(fname), "wb") as f:
            f.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    for draw in (
        lambda: plots.recovery_curves(runs, [cfg], "mlp", "F32", png),
        lambda: plots.metric_curves(runs, cfg, "accuracy", png),
        lambda: plots.heatmap(
            {**runs[0], "seed": 0, "heat": [{"tensor": f"w{i}", "codes": [0, 1]} for i in range(10)]}, png
        ),
    ):
        with pytest.raises(OSError):
            draw()
        assert png.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_eval_names_the_file_an_error_is_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every OSError was "cannot write the results in OUT", a model that could not be read too (InputError is one)
    import errno

    import paramseal.evaluation as evaluation
    from paramseal.errors import InputError

    for exc, msg in (
        (InputError("cannot read 'cache/model.npz': Input/output error"), "cannot read 'cache/model.npz'"),
        (OSError(errno.EIO, "Input/output error", str(tmp_path / "cache.bin")), "eval failed on"),
        (OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "x")), "cannot write the results"),
    ):

        def fail(*a: object, exc: BaseException = exc, **k: object) -> None:
            raise exc

        monkeypatch.setattr(evaluation, "run_eval", fail)
        rc, _, err = helpers.run_cli(["eval", "--out", tmp_path / "o", "--battery", "tiny"])
        assert rc == 3 and msg in err and "Traceback" not in err, err
        assert ("cannot write the results" in err) == (msg == "cannot write the results"), err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--model", "mlp", "--model", "mlp"], "--model 'mlp'"),
        (["--model", "mlp", "--dtype", "F32", "--dtype", "F32"], "--dtype 'F32'"),
        (["--model", "mlp", "--level", "standard", "--level", "standard"], "--level 'standard'"),
    ],
)
def test_a_model_dtype_or_level_named_twice_is_refused(tmp_path: Path, argv: list[str], named: str) -> None:
    # each was run once but counted twice: 'OK: 172 runs (43 new)' after a fresh run of 43
    rc, out, err = helpers.run_cli(["eval", "--out", tmp_path / "o", *argv])
    assert rc == 3 and named in err and "more than once" in err and not out, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("which", "drop"), [("mlp/F32/standard/s0/bitflip_n=10", "label"), ("config:mlp/F32/standard", "metric_sealed")]
)
def test_a_kept_record_that_lacks_a_field_is_a_clear_error(tmp_path: Path, which: str, drop: str) -> None:
    # a record edited or damaged in a finished configuration was kept and crashed the report: 'internal error
    # (KeyError: 'label') ... this is a bug in ParamSeal', after the whole battery had run
    run_eval(BATTERIES["tiny"], tmp_path, progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "results.jsonl").read_text().splitlines()]
    for r in lines:
        if r["id"] == which:
            del r[drop]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = (tmp_path / "results.json").read_bytes()
    rc, out, err = helpers.run_cli(["eval", "--out", tmp_path])
    assert rc == 3 and "Traceback" not in err and not out, err
    assert "results.jsonl" in err and which in err and repr(drop) in err, err
    assert (tmp_path / "results.json").read_bytes() == before  # refused before anything was written


def test_the_page_names_the_cores_its_records_were_measured_on(tiny: tuple[Path, object], tmp_path: Path) -> None:
    # the page said "on this project's 2-core machine" wherever eval ran: a figure no record held
    import os

    from paramseal.evaluation import report

    out, _ = tiny
    recs = json.loads((out / "results.json").read_text())["records"]
    configs = [r for r in recs if r["type"] == "config"]
    assert configs and all(c["cpus"] == os.cpu_count() for c in configs)
    configs[0]["cpus"], configs[1]["cpus"] = 16, 64
    text = report.write_page(recs, tmp_path / "a.md", [], command="c", wall_s=0, battery="tiny").read_text()
    assert "2-core" not in text and "on machines of 16 and 64 CPU cores" in text
    for c in configs:
        c["cpus"] = 16
    text = report.write_page(recs, tmp_path / "b.md", [], command="c", wall_s=0, battery="tiny").read_text()
    assert "on a machine of 16 CPU cores" in text
    for c in configs:
        del c["cpus"]  # records from before they noted it
    text = report.write_page(recs, tmp_path / "c.md", [], command="c", wall_s=0, battery="tiny").read_text()
    assert "2-core" not in text and "on the machine that ran it (its cores not recorded)" in text


@pytest.mark.parametrize(
    "name", ["results.md", "results.json", "results.jsonl", "recovery_mlp_F32.png", "heatmap_mlp.png"]
)
def test_docs_over_a_file_the_battery_writes_is_refused_before_any_run(tmp_path: Path, name: str) -> None:
    """--docs naming a file the battery writes into OUT was refused only for results.*: --docs OUT/heatmap_mlp.png
    ran the battery, then wrote the page over the plot the page links to. Every such name is refused now, before
    any run, and nothing is written."""
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="would overwrite the battery's own output"):
        run_eval(BATTERIES["tiny"], out, docs=out / name, progress=False)
    assert not out.exists()


def test_bfa_finding_says_how_many_values_the_search_changed() -> None:
    """The search stops once the loss overflows (1 flip on a float32 MLP): "5 flips by gradient" claimed 5.

    It also stops when no flip it tries raises the loss, which the finding named no more than the overflow's cause.
    """
    from paramseal.evaluation import _findings

    runs = [
        {
            "type": "run",
            "model": "mlp",
            "kind": "bfa",
            "options": {"n": 5, "model": "mlp"},
            "changed_parameters": made,
            "detected": True,
            "recovered": True,
            "metric_attacked": {"accuracy": 0.2},
            "metric_recovered": {"accuracy": 0.98},
        }
        for made in (1, 2, 1)
    ]
    text = _findings._bfa_text(runs)
    assert (
        "up to 5 flips, which stops once the task loss overflows or none of the flips it tries raises the loss: "
        "1–2 value(s) changed a run" in text
    ), text
    assert "5 flips by gradient" not in text
