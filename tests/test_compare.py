"""gcl-eval compare: the numbers, the formats, refusal of incomparable runs, pairing by query id."""

import csv
import io
import json
import re
from dataclasses import replace

import pytest
from run_helpers import build_runs, make_run

from gcl_eval.report.compare import (
    compare_runs,
    format_csv,
    format_json,
    format_latex,
    format_markdown,
    format_table,
    latex_escape,
    rich_table,
)
from gcl_eval.util.errors import GclError
from gcl_eval.protocol.results import load_run, save_run
from gcl_eval.measures.stats import holm, paired_randomization_test, paired_t_test

SPLITS = ["in_domain", "novel_query", "novel_corpus", "zero_shot"]
TRIPLE = ["nDCG@10", "ERR", "RBP(p=0.9)"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(paths):
    return {name: load_run(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def table(runs):
    return compare_runs([runs["copy"], runs["worse"], runs["bad"]], ["copy", "worse", "bad"], runs["good"],
                        baseline_label="good")


def _per_query(run, split, measure):
    return run.per_query[run.per_query["split"] == split].set_index("qid")[measure]


def test_values_changes_and_p_values_are_exact(runs, table):
    assert table.labels == ["good", "copy", "worse", "bad"]
    assert table.splits == SPLITS and table.measures == TRIPLE
    assert len(table.rows) == 4 * 4 * 3 and table.n_tests == 3 * 4 * 3
    tested = [r for r in table.rows if not r.is_baseline]
    for row in tested:
        run, base = runs[row.run], runs["good"]
        assert row.value == run.metric(row.split, row.measure)
        assert row.baseline_value == base.metric(row.split, row.measure)
        assert row.rel_change == pytest.approx(100 * (row.value / row.baseline_value - 1), rel=1e-9)
        ours = _per_query(run, row.split, row.measure)
        theirs = _per_query(base, row.split, row.measure).loc[ours.index]
        assert row.n_pairs == len(ours) == base.splits[row.split]["n_queries"]
        assert row.p == paired_t_test(ours.to_numpy(), theirs.to_numpy())[1]
    assert [r.p_holm for r in tested] == pytest.approx(list(holm([r.p for r in tested])), rel=1e-12, abs=0)
    for row in tested:
        assert row.significant == (row.p_holm <= 0.05)
    for row in table.rows:
        if row.is_baseline:
            assert row.p is None and row.rel_change is None and row.value == runs["good"].metric(row.split, row.measure)


def test_known_significance(table):
    by_run = {}
    for row in table.rows:
        by_run.setdefault(row.run, []).append(row)
    assert all(r.p == 1.0 and not r.significant and r.delta == 0 for r in by_run["copy"])
    assert all(r.significant and r.delta < 0 and r.p_holm < 1e-3 for r in by_run["bad"])
    # noise 0.6 on the same draws as noise 0.3: small consistent drops, significant in most cells
    assert sum(r.significant for r in by_run["worse"]) >= 8
    assert all(r.delta < 0 for r in by_run["worse"] if r.significant)


def test_randomization_test_option(runs):
    comparison = compare_runs([runs["worse"]], ["worse"], runs["good"], ["nDCG@10"], test="randomization",
                              baseline_label="good")
    row = comparison.cell("worse", "in_domain", "nDCG@10")
    ours = _per_query(runs["worse"], "in_domain", "nDCG@10")
    theirs = _per_query(runs["good"], "in_domain", "nDCG@10").loc[ours.index]
    assert row.p == paired_randomization_test(ours.to_numpy(), theirs.to_numpy(), 10000, 0)
    assert "randomisation" in comparison.legend() and "over 4 tests" in comparison.legend()


def test_plain_table_layout(table):
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split() == SPLITS  # the column groups
    assert lines[2].split() == ["run"] + TRIPLE * 4
    assert lines[3].startswith("good (baseline)")
    assert lines[5].startswith("worse") and "\u2020" in lines[5]
    bad = lines[6].split()
    assert bad[0] == "bad" and len(bad) == 1 + 2 * 12 and all(x.endswith("%\u2020") for x in bad[2::2])
    assert "Holm-adjusted over 36 tests" in lines[7]


def test_rich_table_renders(table):
    from rich.console import Console

    console = Console(record=True, width=300, color_system=None)
    console.print(rich_table(table))
    out = console.export_text()
    assert "novel_corpus" in out and "good (baseline)" in out and "\u2020" in out


def test_markdown(runs):
    comparison = compare_runs([runs["bad"]], ["bad | <b>run</b>"], runs["good"], ["nDCG@10", "ERR"],
                              baseline_label="good")
    lines = format_markdown(comparison).splitlines()
    assert lines[0] == ("| run | in_domain nDCG@10 | in_domain ERR | novel_query nDCG@10 | novel_query ERR | "
                        "novel_corpus nDCG@10 | novel_corpus ERR | zero_shot nDCG@10 | zero_shot ERR |")
    assert lines[1] == "|---" + "|---:" * 8 + "|"
    assert lines[2].startswith("| **good (baseline)** | ")
    assert lines[3].startswith("| bad \\| \\<b\\>run\\</b\\> | ")
    assert lines[3].count("|") - 1 - 1 == 9  # the escaped pipe does not make a column
    assert "over 8 tests" in lines[-1]


def test_csv_is_long_form_and_exact(table):
    rows = list(csv.DictReader(io.StringIO(format_csv(table))))
    assert len(rows) == len(table.rows)
    for parsed, row in zip(rows, table.rows):
        assert (parsed["run"], parsed["split"], parsed["measure"]) == (row.run, row.split, row.measure)
        assert float(parsed["value"]) == row.value
        if row.is_baseline:
            assert parsed["is_baseline"] == "True" and parsed["p"] == "" and parsed["p_holm"] == ""
        else:
            assert float(parsed["p"]) == row.p and float(parsed["p_holm"]) == row.p_holm
            assert parsed["significant"] == str(row.significant)


def test_json_has_everything(table, runs):
    doc = json.loads(format_json(table))
    assert doc["baseline"] == "good" and doc["test"] == "t" and doc["correction"] == "holm"
    assert doc["alpha"] == 0.05 and doc["n_tests"] == 36
    assert [r["label"] for r in doc["runs"]] == ["good", "copy", "worse", "bad"]
    assert doc["runs"][0]["baseline"] is True
    assert doc["runs"][0]["dataset"]["fingerprint"] == runs["good"].dataset["fingerprint"]
    cell = next(r for r in doc["rows"] if r["run"] == "bad" and r["split"] == "zero_shot" and r["measure"] == "ERR")
    expected = table.cell("bad", "zero_shot", "ERR")
    assert cell["p"] == expected.p and cell["p_holm"] == expected.p_holm and cell["significant"] is True
    assert cell["value"] == runs["bad"].metric("zero_shot", "ERR") and cell["n_pairs"] == expected.n_pairs
    assert doc["notes"] == []


def test_latex_booktabs_and_escaping(runs):
    label = r"GCL & co_{v2} 100% #1 $x^2$ ~\ok"
    comparison = compare_runs([runs["bad"]], [label], runs["good"], baseline_label="good")
    tex = format_latex(comparison)
    assert latex_escape(label) == (r"GCL \& co\_\{v2\} 100\% \#1 \$x\textasciicircum{}2\$ "
                                   r"\textasciitilde{}\textbackslash{}ok")
    lines = tex.splitlines()
    assert lines[0].startswith("% relative change against good")
    assert lines[1] == r"\begin{tabular}{lrrrrrrrrrrrr}" and lines[2] == r"\toprule"
    assert lines[3] == (r" & \multicolumn{3}{c}{in-domain} & \multicolumn{3}{c}{novel query} & "
                        r"\multicolumn{3}{c}{novel corpus} & \multicolumn{3}{c}{zero-shot} \\")
    assert lines[4] == r"\cmidrule(lr){2-4}\cmidrule(lr){5-7}\cmidrule(lr){8-10}\cmidrule(lr){11-13}"
    assert lines[5] == r"Run & " + " & ".join(TRIPLE * 4) + r" \\"
    assert lines[7].startswith("good (baseline) & ")
    assert lines[8].startswith(latex_escape(label) + " & ")
    assert r"$^{\dagger}$ {\scriptsize ($-$" in lines[8] and r"\%)}" in lines[8]
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert all(len(re.findall(r"(?<!\\)&", line)) == 12 for line in lines[5:9] if line != r"\midrule")


def test_without_baseline_only_values(runs):
    comparison = compare_runs([runs["good"], runs["bad"]], ["good", "bad"], measures=["R@100"])
    assert comparison.baseline is None and comparison.n_tests == 0
    assert all(r.p is None and r.rel_change is None for r in comparison.rows)
    assert comparison.cell("bad", "in_domain", "R@100").value == runs["bad"].metric("in_domain", "R@100")
    assert "\u2020" not in format_table(comparison)


def test_a_run_without_some_splits(runs, tmp_path):
    partial = load_run(make_run(tmp_path / "partial", "random", splits=("in_domain", "zero_shot")))
    comparison = compare_runs([partial], ["partial"], runs["good"], ["nDCG@10"], baseline_label="good")
    assert comparison.splits == SPLITS and comparison.n_tests == 2
    missing = comparison.cell("partial", "novel_query", "nDCG@10")
    assert missing.value is None and missing.p is None and missing.p_holm is None and not missing.significant
    # Holm over the 2 tested cells: the smaller p (96 queries) x2, the larger one x1
    in_domain = comparison.cell("partial", "in_domain", "nDCG@10")
    zero_shot = comparison.cell("partial", "zero_shot", "nDCG@10")
    assert in_domain.p < zero_shot.p and in_domain.p_holm == 2 * in_domain.p and zero_shot.p_holm == zero_shot.p
    row = format_table(comparison).splitlines()[4].split()
    assert row[0] == "partial" and row[3] == "-" and row[4] == "-" and row[1].startswith("0.0")
    assert json.loads(format_json(comparison))["rows"][5]["value"] is None


@pytest.mark.parametrize("other, needle", [
    ("other_data", "in dataset (synth-s4 fingerprint"),
    ("other_protocol", "in protocol top_k (50 vs 100)"),
])
def test_incomparable_runs_are_refused_unless_forced(runs, other, needle):
    with pytest.raises(GclError, match=re.escape(f"not comparable: x differs from good {needle}")) as err:
        compare_runs([runs[other]], ["x"], runs["good"], baseline_label="good")
    assert "--force" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(GclError, match="not comparable"):  # without a baseline the first run is the reference
        compare_runs([runs["good"], runs[other]], ["good", "x"])
    forced = compare_runs([runs[other]], ["x"], runs["good"], baseline_label="good", force=True)
    assert forced.notes[0].startswith("forced: x differs from good") and needle in forced.notes[0]
    assert "note: forced" in format_table(forced)


def test_forced_different_query_sets_pair_on_the_shared_queries(runs, paths, tmp_path):
    # another dataset reuses some query ids (q000036, ...): forced, those are paired, and the notes say so
    forced = compare_runs([runs["other_data"]], ["x"], runs["good"], baseline_label="good", force=True)
    assert forced.cell("x", "in_domain", "ERR").n_pairs == 77 and forced.cell("x", "zero_shot", "ERR").n_pairs == 5
    assert [n.split(":")[0] for n in forced.notes] == ["forced", *SPLITS]
    # a run that lost some queries of one split
    fewer = _drop_queries(runs["bad"], "in_domain", 10, tmp_path / "fewer")
    with pytest.raises(GclError, match="in_domain: x and good have different query sets .86 and 96 queries, 86 shared"):
        compare_runs([fewer], ["x"], runs["good"], baseline_label="good")
    forced = compare_runs([fewer], ["x"], runs["good"], ["nDCG@10"], baseline_label="good", force=True)
    row = forced.cell("x", "in_domain", "nDCG@10")
    assert row.n_pairs == 86 and row.value == fewer.metric("in_domain", "nDCG@10")
    ours = _per_query(fewer, "in_domain", "nDCG@10")
    assert row.p == paired_t_test(ours.to_numpy(), _per_query(runs["good"], "in_domain", "nDCG@10")
                                  .loc[ours.index].to_numpy())[1]
    assert forced.cell("x", "zero_shot", "nDCG@10").n_pairs == 24
    assert [n for n in forced.notes if "shared" in n] == [
        "in_domain: x and good have different query sets (86 and 96 queries, 86 shared); tested on the shared "
        "queries, values and changes are the runs' own means"]
    assert any("86 shared" in n for n in json.loads(format_json(forced))["notes"])


def _drop_queries(run, split, n, folder):
    """A copy of run without the first n queries of split (aggregates recomputed), saved and loaded."""
    keep = run.per_query.drop(run.per_query.index[run.per_query["split"] == split][:n]).reset_index(drop=True)
    splits = json.loads(json.dumps(run.splits))
    rows = keep[keep["split"] == split]
    splits[split]["n_queries"] = len(rows)
    splits[split]["metrics"] = {m: float(rows[m].mean()) for m in run.protocol["measures"]}
    return load_run(save_run(replace(run, per_query=keep, splits=splits), folder))


def test_pairing_is_by_query_id_not_row_order(runs, tmp_path):
    shuffled = runs["worse"].per_query.sample(frac=1.0, random_state=0).reset_index(drop=True)
    moved = load_run(save_run(replace(runs["worse"], per_query=shuffled), tmp_path / "shuffled"))
    a = compare_runs([runs["worse"]], ["worse"], runs["good"], baseline_label="good")
    b = compare_runs([moved], ["worse"], runs["good"], baseline_label="good")
    assert [r.p for r in a.rows] == [r.p for r in b.rows]


def test_measures_must_exist(runs):
    with pytest.raises(GclError, match=r"good has no MAP@1000 \(its measures: nDCG@10, ERR, RBP\(p=0.9\), R@100\)"):
        compare_runs([runs["bad"]], ["bad"], runs["good"], ["nDCG@10", "MAP@1000"], baseline_label="good")
    with pytest.raises(GclError, match="labels must be distinct"):
        compare_runs([runs["bad"], runs["worse"]], ["x", "x"])


# ---------------------------------------------------------------------------------------------------------
# The command


def test_cli_json_and_measure_lists(paths, gcl):
    result = gcl("compare", paths["bad"], paths["worse"], "--baseline", paths["good"], "-m", "nDCG@10,ERR",
                 "--measures", "R@100", "--format", "json")
    assert result.code == 0, result.err
    doc = result.json()
    assert [r["label"] for r in doc["runs"]] == ["good", "bad", "worse"]  # folder names: no preset
    assert doc["measures"] == ["nDCG@10", "ERR", "R@100"] and doc["n_tests"] == 2 * 4 * 3


def test_cli_plain_table_when_piped(paths, gcl):
    result = gcl("compare", paths["good"], paths["bad"], "--baseline", paths["good"])
    assert result.code == 0, result.err
    out = result.out
    assert out.splitlines()[3].startswith("good (baseline)")  # a run dir equal to the baseline is not repeated
    assert len([line for line in out.splitlines() if line.startswith(("good", "bad"))]) == 2


@pytest.mark.parametrize("fmt, start", [("markdown", "| run |"), ("csv", "run,is_baseline"),
                                        ("latex", "% relative change"), ("table", " ")])
def test_cli_formats(paths, gcl, fmt, start):
    result = gcl("compare", paths["bad"], "--baseline", paths["good"], "--format", fmt, "--test", "randomization")
    assert result.code == 0 and result.out.startswith(start), result.err


def test_cli_labels_use_the_preset(tmp_path, gcl):
    a = make_run(tmp_path / "a", "oracle", preset="vitb32-gcl")
    b = make_run(tmp_path / "b", "random", preset="vitb32-clip")
    result = gcl("compare", b, "--baseline", a, "--format", "csv")
    assert result.code == 0, result.err
    assert {row["run"] for row in csv.DictReader(io.StringIO(result.out))} == {"vitb32-gcl", "vitb32-clip"}


@pytest.mark.parametrize("args, needle", [
    (["{other_data}", "--baseline", "{good}"], "not comparable"),
    (["{bad}", "--baseline", "{good}", "-m", "MAP@1000"], "has no MAP@1000"),
    (["{good}", "--baseline", "{good}"], "nothing to compare"),
    (["{good}/nope"], "not a run folder"),
    (["{bad}", "--alpha", "1.5"], "alpha"),
])
def test_cli_bad_input_exits_2_with_one_line(paths, gcl, args, needle):
    result = gcl("compare", *[a.format(**{k: str(v) for k, v in paths.items()}) for a in args])
    assert result.code == 2
    err = result.err
    assert needle in err and err.count("\n") == 1 and err.startswith("gcl-eval: error: ")


def test_cli_force(paths, gcl):
    result = gcl("compare", paths["other_protocol"], "--baseline", paths["good"], "--force", "--format", "json")
    assert result.code == 0, result.err
    notes = result.json()["notes"]
    assert notes == ["forced: other_protocol differs from good in protocol top_k (50 vs 100)"]
