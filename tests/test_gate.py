"""gcl-eval gate: the two failure rules, the markdown summary, exit codes 0/1/2, GITHUB_STEP_SUMMARY."""

import os
import subprocess
import sys

import pytest
from run_helpers import build_runs

from gcl_eval.util.errors import GclError
from gcl_eval.report.gate import gate
from gcl_eval.protocol.results import load_run


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(paths):
    return {name: load_run(path) for name, path in paths.items()}


def test_identical_runs_pass(runs):
    report = gate(runs["good"], runs["copy"])
    assert report.passed and len(report.cells) == 4 * 3
    assert all(c.delta == 0 and c.p == 1.0 and c.p_holm == 1.0 and c.status == "ok" for c in report.cells)
    assert report.verdict() == "PASS: no cell of 12 regressed"


def test_a_random_model_fails_every_cell_on_both_rules(runs):
    report = gate(runs["good"], runs["bad"])
    assert not report.passed and len(report.failures) == 12
    assert all(c.too_large and c.significant_drop for c in report.cells)
    assert {c.status for c in report.cells} == {"fail: drop > max_drop, significant drop"}


def test_large_drops_fail_without_significance(runs):
    # other noise draws: no significant difference anywhere; some cells still move by more than 0.01
    report = gate(runs["good"], runs["reseeded"], max_drop=0.01)
    assert not any(c.significant_drop for c in report.cells) and all(c.p_holm == 1.0 for c in report.cells)
    failed = {(c.split, c.measure) for c in report.failures}
    assert failed == {(c.split, c.measure) for c in report.cells if c.delta < -0.01}
    assert ("in_domain", "nDCG@10") in failed and ("zero_shot", "ERR") in failed
    assert all(c.status == "fail: drop > max_drop" for c in report.failures)
    assert gate(runs["good"], runs["reseeded"], max_drop=0.05).passed
    # a drop of exactly max_drop passes
    worst = min(c.delta for c in report.cells)
    assert gate(runs["good"], runs["reseeded"], max_drop=-worst).passed


def test_small_significant_drops_fail(runs):
    # noise 0.6 on the same draws: RBP drops by ~0.005 per split, consistently: significant, below max_drop
    report = gate(runs["good"], runs["worse"], max_drop=0.01, measures=["RBP(p=0.9)"])
    assert not report.passed
    assert all(not c.too_large and c.significant_drop and -0.01 < c.delta < 0 for c in report.cells)
    # at a stricter alpha the drop on 24 novel_query queries (p = 4.4e-4, Holm x1) is no longer significant
    strict = gate(runs["good"], runs["worse"], max_drop=0.01, measures=["RBP(p=0.9)"], alpha=1e-4)
    assert [c.split for c in strict.failures] == ["in_domain", "novel_corpus", "zero_shot"]
    novel = next(c for c in strict.cells if c.split == "novel_query")
    assert 1e-4 < novel.p_holm == novel.p < 1e-3  # the largest p of the four: Holm multiplies it by 1


def test_selected_cells_and_holm_over_them(runs):
    report = gate(runs["good"], runs["worse"], measures=["nDCG@10", "ERR"], splits=["zero_shot", "in_domain"])
    assert [(c.split, c.measure) for c in report.cells] == [
        ("zero_shot", "nDCG@10"), ("zero_shot", "ERR"), ("in_domain", "nDCG@10"), ("in_domain", "ERR")]
    single = gate(runs["good"], runs["worse"], measures=["ERR"], splits=["zero_shot"])
    assert single.cells[0].p_holm == single.cells[0].p  # one cell: nothing to correct
    assert single.cells[0].p == next(c.p for c in report.cells if (c.split, c.measure) == ("zero_shot", "ERR"))


def test_randomization_gate(runs):
    report = gate(runs["good"], runs["bad"], test="randomization", measures=["nDCG@10"])
    assert all(c.p == pytest.approx(1 / 10001) for c in report.cells) and not report.passed
    assert "paired randomisation test" in report.markdown()


@pytest.mark.parametrize("kwargs, needle", [
    ({"splits": ["in_domain", "dev"]}, "baseline has no split dev"),
    ({"measures": ["P@10"]}, "baseline has no P@10"),
    ({"max_drop": -0.1}, "max drop must be a non-negative number"),
    ({"alpha": 0.0}, "alpha must be between 0 and 1"),
    ({"test": "wilcoxon"}, "unknown test"),
])
def test_bad_requests(runs, kwargs, needle):
    with pytest.raises(GclError, match=needle):
        gate(runs["good"], runs["bad"], **kwargs)


def test_incomparable_runs_are_bad_input(runs):
    with pytest.raises(GclError, match="not comparable: candidate differs from baseline in protocol top_k") as err:
        gate(runs["good"], runs["other_protocol"])
    assert "--force" not in str(err.value) and "refresh the baseline" in str(err.value)
    with pytest.raises(GclError, match=r"in dataset \(synth-s4 fingerprint [0-9a-f]{12} vs synth-s3"):
        gate(runs["good"], runs["other_data"])


def test_markdown_summary(runs):
    text = gate(runs["good"], runs["bad"], baseline_label="runs/baseline", candidate_label="runs/candidate").markdown()
    lines = text.splitlines()
    assert lines[0] == "### gcl-eval gate: \u274c FAIL: 12 of 12 cells regressed"
    assert "Candidate `runs/candidate` against baseline `runs/baseline` on dataset `synth-s3`" in lines[2]
    assert "more than 0.01 (absolute)" in lines[2] and "Holm-adjusted over 12 cells" in lines[2]
    assert lines[4] == "| split | measure | baseline | candidate | delta | p | p (Holm) | queries | status |"
    rows = [line for line in lines[6:] if line.startswith("| ")]
    assert len(rows) == 12
    assert rows[0].startswith("| in_domain | nDCG@10 | 0.8243 | 0.0309 | -0.7934 | 1.1e-83 | 1.3e-82 | 96 | ")
    assert rows[0].endswith("| \u274c fail: drop > 0.01, significant drop |")
    ok = gate(runs["good"], runs["copy"]).markdown().splitlines()
    assert ok[0] == "### gcl-eval gate: \u2705 PASS: no cell of 12 regressed"
    assert ok[6] == "| in_domain | nDCG@10 | 0.8243 | 0.8243 | +0.0000 | 1.0000 | 1.0000 | 96 | ok |"


# ---------------------------------------------------------------------------------------------------------
# The command


def _gate(paths, baseline, candidate, *extra):
    return ["gate", "--baseline", str(paths[baseline]), "--candidate", str(paths[candidate]), *extra]


def test_cli_pass_prints_the_summary_and_appends_it_to_the_job_summary(paths, tmp_path, monkeypatch, gcl):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = gcl(_gate(paths, "good", "copy"))
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("### gcl-eval gate: \u2705 PASS")
    assert summary.read_text() == "# earlier step\n" + out + "\n"


def test_cli_regression_exits_1(paths, tmp_path, monkeypatch, gcl):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = gcl(_gate(paths, "good", "worse", "--max-drop", "0.05", "-m", "RBP(p=0.9)", "--splits",
                       "in_domain,zero_shot"))
    assert result.code == 1, result.err
    out = result.out
    assert "FAIL: 2 of 2 cells regressed" in out and "significant drop" in out
    assert summary.read_text() == out + "\n"


def test_cli_gate_a_run_against_itself(paths, monkeypatch, gcl):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = gcl(_gate(paths, "good", "good", "-s", "novel_query"))
    assert result.code == 0, result.err
    out = result.out
    assert "PASS: no cell of 3 regressed" in out and f"Candidate `{paths['good']}` against baseline" in out


def test_cli_without_job_summary(paths, monkeypatch, gcl):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = gcl(_gate(paths, "good", "reseeded", "--max-drop", "0.05", "--alpha", "0.01", "--test", "randomization"))
    assert result.code == 0 and "PASS" in result.out, result.err


@pytest.mark.parametrize("args, needle", [
    (["--baseline", "{good}", "--candidate", "{other_data}"], "not comparable"),
    (["--baseline", "{good}", "--candidate", "{good}/missing"], "not a run folder"),
    (["--baseline", "{good}", "--candidate", "{bad}", "--splits", "dev"], "has no split dev"),
    (["--baseline", "{good}", "--candidate", "{bad}", "-m", "MAP@1000"], "has no MAP@1000"),
    (["--baseline", "{good}", "--candidate", "{bad}", "--max-drop", "-1"], "--max-drop"),
    (["--baseline", "{good}"], "--candidate"),
])
def test_cli_bad_input_exits_2(paths, gcl, args, needle):
    result = gcl("gate", *[a.format(**{k: str(v) for k, v in paths.items()}) for a in args])
    assert result.code == 2
    err = result.err
    assert needle in err and err.count("\n") == 1


def test_cli_unwritable_job_summary_is_bad_input(paths, tmp_path, monkeypatch, gcl):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir" / "summary.md"))
    result = gcl(_gate(paths, "good", "copy"))
    assert result.code == 2 and "GITHUB_STEP_SUMMARY" in result.err


def test_exit_codes_of_the_real_process(paths, tmp_path):
    """What CI sees: python -m gcl_eval gate in a subprocess returns 0, 1 and 2."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    codes = []
    for candidate in ("copy", "bad", "other_protocol"):
        done = subprocess.run([sys.executable, "-m", "gcl_eval", *_gate(paths, "good", candidate)],
                              capture_output=True, text=True, env=env, timeout=120)
        codes.append(done.returncode)
    assert codes == [0, 1, 2]
