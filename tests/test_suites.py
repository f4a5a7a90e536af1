"""Suites: definitions (packaged and user files, one-line errors), expansion over seeds, the statistics of
the report, and a small suite run end to end (run folders, summary, reuse on a rerun). The report's
p-values against scipy are in tests/comparison/test_scipy_stats.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gcl_eval.util.errors import GclError
from gcl_eval.report.suite_summary import check_gcl_targets, compare, curves_markdown, summary, summary_markdown
from gcl_eval.experiments.suite import expand, load_suite, suite_names
from run_helpers import fake_run

PACKAGED = ["paper-batch-mini", "paper-control-mini", "paper-curves-mini", "paper-fields-mini", "paper-heldout-mini",
            "paper-norm-mini", "paper-stw-mini", "paper-table1-mini", "paper-world2-mini"]
PROTOCOL = {"top_k": 1000, "queries_per_split": 2000, "seed": 0}


def test_packaged_suites_load_and_list(gcl):
    assert suite_names() == PACKAGED
    for name in PACKAGED:
        suite = load_suite(name)
        assert suite.runs and all(c.run in {r.label for r in suite.runs} for c in suite.comparisons)
    table1 = load_suite("paper-table1-mini")
    assert [r.label for r in table1.runs] == ["bm25", "minilm-zs", "minilm-ce", "minilm-gcl", "mini-zs",
                                              "mini-clip-orig", "mini-clip", "mini-gcl"]
    assert {(c.run, c.baseline) for c in table1.comparisons if c.targets == "gcl"} == {("mini-gcl", "mini-clip")}
    # GCL and its baseline get the same budget: only the weighting differs
    for baseline, run in (("minilm-ce", "minilm-gcl"), ("mini-clip", "mini-gcl")):
        ce, gcl_run = table1.run(baseline).preset, table1.run(run).preset
        assert ({k: v for k, v in ce.train.items() if k != "stw"}
                == {k: v for k, v in gcl_run.train.items() if k != "stw"})
    assert table1.run("minilm-ce").preset.train["max_steps"] == 100
    assert table1.run("minilm-ce").preset.eval_precision == "bf16"
    fields = load_suite("paper-fields-mini")
    assert fields.run("image-1.0").preset.cold_start_fields is None
    assert fields.run("image-0.5-cold-0.0").preset.cold_start_fields.as_dict() == {"title": 1.0}
    assert load_suite("paper-control-mini").world == "control" and load_suite("paper-world2-mini").world == "second"

    result = gcl("suite", "--list")
    assert result.code == 0 and all(name in result.out for name in PACKAGED)


def test_expand_repeats_trained_runs_per_seed_only():
    specs = expand(load_suite("paper-table1-mini"), 3, PROTOCOL)
    assert len(specs) == 3 + 5 * 3
    assert [s.folder for s in specs[:3]] == ["bm25", "minilm-zs", "minilm-ce/seed-0"]
    assert [s.seed for s in specs if s.label == "mini-gcl"] == [0, 1, 2]
    assert len({s.key for s in specs}) == len(specs)
    again = expand(load_suite("paper-table1-mini"), 3, PROTOCOL)
    assert [s.key for s in again] == [s.key for s in specs]  # stable: what lets a rerun reuse folders
    other = expand(load_suite("paper-table1-mini"), 3, {**PROTOCOL, "queries_per_split": 100})
    assert not {s.key for s in other} & {s.key for s in specs}
    with pytest.raises(GclError, match="at least 1"):
        expand(load_suite("paper-table1-mini"), 0, PROTOCOL)


def test_dry_run_lists_the_runs(tmp_path, gcl):
    result = gcl("suite", "paper-stw-mini", "--seeds", "2", "--dry-run", "--out", str(tmp_path / "s"))
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 10 and lines[0].startswith("[1/10] stw-constant seed 0") and "(to run)" in lines[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("body,needle", [
    ('runs = []', "at least one [[runs]]"),
    ('[[runs]]\npreset = "nope"', "unknown preset 'nope'"),
    ('[[runs]]\npreset = "bm25"\n[[runs]]\npreset = "bm25"', "two runs are labelled 'bm25'"),
    ('[[runs]]\npreset = "bm25"\ntrain = { epochs = 2 }', "does not train"),
    ('[[runs]]\npreset = "tiny-gcl"\ntrain = { max_stepz = 2 }', "unknown training option(s): max_stepz"),
    ('[[runs]]\npreset = "tiny-gcl"\ntrain = { max_steps = 0 }', "max_steps must be a positive integer"),
    ('[[runs]]\npreset = "tiny-gcl"\neval = { precision = "fp8" }', "eval.precision 'fp8'"),
    ('world = "mars"\n[[runs]]\npreset = "bm25"', "world 'mars'"),
    ('colour = 1\n[[runs]]\npreset = "bm25"', "unknown key(s) colour"),
    ('[[runs]]\npreset = "bm25"\n[[comparisons]]\nrun = "bm25"\nbaseline = "x"', "baseline 'x' is not a run label"),
    ('[[runs]]\nlabel = "a b"\npreset = "bm25"', "label 'a b'"),
    ('[[runs', "not valid TOML"),
    ('[[runs]]\npreset = "tiny-gcl"\ntrain = 3', "train and eval must be tables"),
    ('[[runs]]\npreset = "bm25"\n[[comparisons]]\nrun = ["bm25"]\nbaseline = "bm25"', "is not a run label"),
])
def test_bad_suite_files_are_one_line_errors_with_exit_2(tmp_path, body, needle, gcl):
    path = tmp_path / "bad.toml"
    path.write_text(body + "\n")
    result = gcl("suite", str(path), "--dry-run")
    assert result.code == 2, result.out + result.err
    assert needle in result.err and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_unknown_suite_and_missing_data_exit_2(tmp_path, gcl):
    result = gcl("suite", "paper-nothing")
    assert result.code == 2 and "unknown suite 'paper-nothing'" in result.err and "paper-table1-mini" in result.err
    result = gcl("suite", "paper-stw-mini", "--data", str(tmp_path / "missing"))
    assert result.code == 2 and "no such dataset folder" in result.err
    result = gcl("suite")
    assert result.code == 2 and "give a suite name" in result.err


# ------------------------------------------------------------------------------------------ statistics


def test_targets_need_the_ratio_and_significance():
    rng = np.random.default_rng(1)
    splits = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
    base = [fake_run({s: rng.uniform(0.2, 0.4, 60) for s in splits}, k) for k in range(3)]
    strong = [fake_run({s: np.minimum(base[k].per_query.query("split == @s")["nDCG@10"].to_numpy() * 1.6, 1)
                        for s in splits}, k) for k in range(3)]
    targets = check_gcl_targets(compare("gcl", strong, "clip", base))
    assert [t["target"] for t in targets][:3] == ["in_domain ERR >= 2x", "novel_corpus ERR >= 1.3x",
                                                 "zero_shot ERR >= 1.3x"]
    # ERR = nDCG^2 in the fake runs: 1.6^2 = 2.56x, every nDCG@10 1.6x, all significant
    assert all(t["met"] for t in targets)
    weak = [fake_run({s: base[k].per_query.query("split == @s")["nDCG@10"].to_numpy() * 1.2 for s in splits}, k)
            for k in range(3)]
    met = {t["target"]: t["met"] for t in check_gcl_targets(compare("gcl", weak, "clip", base))}
    assert not met["in_domain ERR >= 2x"] and met["novel_corpus ERR >= 1.3x"] and met["zero_shot nDCG@10 higher"]
    above = compare("gcl", weak, "clip", base, check_targets="above").targets
    assert [t["target"] for t in above] == [f"{s} nDCG@10 higher" for s in splits] and all(t["met"] for t in above)
    below = compare("clip", base, "gcl", weak, check_targets="above")
    assert below.targets_met is False and not any(t["met"] for t in below.targets)


def test_a_comparison_names_its_targets_kind(tmp_path):
    body = "world = 'default'\n[[runs]]\nlabel = 'a'\npreset = 'bm25'\n[[runs]]\nlabel = 'b'\npreset = 'bm25'\n"
    for value, kind in (("true", "gcl"), ("false", ""), ("'above'", "above"), ("'gcl'", "gcl")):
        path = tmp_path / "s.toml"
        path.write_text(body + f"[[comparisons]]\nrun = 'a'\nbaseline = 'b'\ntargets = {value}\n")
        assert load_suite(path).comparisons[0].targets == kind
    path.write_text(body + "[[comparisons]]\nrun = 'a'\nbaseline = 'b'\ntargets = 'most'\n")
    with pytest.raises(GclError, match="targets 'most' is not true, false"):
        load_suite(path)


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [fake_run({"in_domain": np.full(5, v)}, k) for k, v in enumerate((0.1, 0.2, 0.6))]
    table = summary({"m": runs, "one": runs[:1]})
    stat = table["m"]["in_domain"]["nDCG@10"]
    assert math.isclose(stat["mean"], 0.3) and math.isclose(stat["std"], np.std([0.1, 0.2, 0.6], ddof=1))
    assert table["one"]["in_domain"]["nDCG@10"]["std"] is None
    text = summary_markdown(table)
    assert "| m | 3 | 0.300 ± 0.265 |" in text and "| one | 1 | 0.100 |" in text


def test_learning_curves_are_a_table_per_run_and_seed_with_a_row_per_evaluation():
    curved = fake_run({"in_domain": np.full(5, 0.3)}, 0)
    curved.model["train"] = {"learning_curve": [
        {"step": step, "epoch": 1, "splits": {"novel_corpus": {"nDCG@10": n, "ERR": e}, "in_domain": {"nDCG@10": n}}}
        for step, n, e in ((150, 0.25, 0.0625), (300, 0.5, float("nan")))]}
    text = curves_markdown({"plain": [fake_run({"in_domain": np.full(5, 0.3)}, 0)], "gcl": [curved]})
    assert text.splitlines() == ["**gcl** (seed 0)", "", "| step | in_domain | novel_corpus |", "|---|---|---|",
                                 "| | nDCG@10 / ERR | nDCG@10 / ERR |", "| 150 | .250 / - | .250 / .062 |",
                                 "| 300 | .500 / - | .500 / - |"]
    assert curves_markdown({"plain": [fake_run({"in_domain": np.full(5, 0.3)}, 0)]}) == ""


def test_runs_on_different_queries_are_refused():
    a = fake_run({"in_domain": np.full(5, 0.3)}, 0)
    b = fake_run({"in_domain": np.full(6, 0.3)}, 0)
    with pytest.raises(GclError, match="different queries"):
        compare("a", [a], "b", [b])


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_small_suite_runs_end_to_end_and_a_rerun_reuses_it(tmp_path, gcl):
    from train_helpers import make_dataset

    data = make_dataset(tmp_path / "data", queries=20, docs_per_query=20)
    definition = tmp_path / "small.toml"
    definition.write_text("""
description = "two tiny models and BM25"
[[runs]]
preset = "bm25"
[[runs]]
label = "clip"
preset = "tiny-clip"
train = { max_steps = 3, batch_size = 16 }
[[runs]]
label = "gcl"
preset = "tiny-gcl"
train = { max_steps = 3, batch_size = 16 }
[[comparisons]]
run = "gcl"
baseline = "clip"
targets = true
""")
    out = tmp_path / "out"
    args = ("suite", str(definition), "--seeds", "2", "--data", str(data), "--out", str(out), "--queries", "10",
            "--workers", "0")
    first = gcl(*args)
    assert first.code == 0, first.err[-3000:]
    folders = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("result.json"))
    assert folders == ["bm25", "clip/seed-0", "clip/seed-1", "gcl/seed-0", "gcl/seed-1"]
    assert not list(out.rglob("*.trec"))  # no TREC files unless --trec
    report = json.loads((out / "suite.json").read_text())
    assert [r["reused"] for r in report["runs"]] == [False] * 5
    assert report["summary"]["gcl"]["seeds"] == 2 and len(report["comparisons"][0]["targets"]) == 7
    assert report["data"] == str(data) and report["world"] is None  # --data replaced the built-in world
    model = json.loads((out / "gcl/seed-1/result.json").read_text())["model"]
    assert model["label"] == "gcl" and model["seed"] == 1 and model["train"]["config"]["seed"] == 1
    assert model["train"]["config"]["max_steps"] == 3
    summary_text = (out / "summary.md").read_text()
    assert "**gcl** vs **clip**" in summary_text and summary_text in first.out

    second = gcl(*args)
    assert second.code == 0 and second.err.count("done, reused") == 5
    again = json.loads((out / "suite.json").read_text())
    assert again["summary"] == report["summary"] and [r["reused"] for r in again["runs"]] == [True] * 5

    with_trec = gcl(*args, "--trec")  # folders written without TREC files are not reused when they are asked for
    assert with_trec.code == 0 and with_trec.err.count("done, reused") == 0
    assert len(list((out / "bm25").glob("run_*.trec"))) == 4


def test_display_label_names_suite_runs_with_their_seed():
    from gcl_eval.protocol.results import display_label

    assert display_label({"preset": "tiny-gcl", "label": "stw-linear", "seed": 2}) == "stw-linear seed 2"
    assert display_label({"preset": "bm25", "label": "bm25", "seed": None}) == "bm25"
    assert display_label({"preset": "tiny-gcl", "seed": 3}) == "tiny-gcl"  # seed shown for suite runs only
    assert display_label({}) is None and display_label("x") is None
