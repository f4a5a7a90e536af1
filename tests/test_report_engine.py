"""One comparison engine: compare, gate, suite summaries and the leaderboard agree cell for cell."""

import json
import re
from dataclasses import replace

import pytest
from run_helpers import make_run

from gcl_eval.protocol.results import load_run, save_run
from gcl_eval.report.compare import compare_runs, format_json, format_table
from gcl_eval.report.engine import CompareOptions, IncomparableRuns, Side, compare, relative_change
from gcl_eval.report.gate import gate
from gcl_eval.report.suite_summary import compare as suite_compare
from gcl_eval.report.suite_summary import comparison_markdown
from gcl_eval.util.errors import GclError
from leaderboard.build import build_tables, collect_runs, group_models

ZERO = ("zero_shot", "ERR")  # the cell where the zero baseline scores 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """RESULTS_DIR with a baseline and a candidate (one leaderboard table), and a baseline scoring 0 on ZERO."""
    root = tmp_path_factory.mktemp("results")
    make_run(root / "pair" / "base", "oracle", noise=0.6, preset="base")
    make_run(root / "pair" / "cand", "oracle", noise=0.3, preset="cand")
    make_run(root / "zero" / "cand", "oracle", noise=0.3, preset="cand")
    _zeroed(load_run(root / "pair" / "base"), root / "zero" / "base")
    return root


def _zeroed(run, folder):
    """A copy of run whose per-query scores (and so its mean) are 0 on the ZERO cell."""
    split, measure = ZERO
    per_query = run.per_query.copy()
    per_query.loc[per_query["split"] == split, measure] = 0.0
    splits = json.loads(json.dumps(run.splits))
    splits[split]["metrics"][measure] = 0.0
    return save_run(replace(run, per_query=per_query, splits=splits), folder)


def _four_reports(results, group, test):
    """The same pair through compare, gate, the suite summary and the leaderboard, keyed (split, measure)."""
    base, cand = load_run(results / group / "base"), load_run(results / group / "cand")
    table = compare_runs([cand], ["cand"], base, baseline_label="base", test=test)
    compared = {(c.split, c.measure): c for c in table.cells_of("cand")}
    gated = {(c.split, c.measure): c for c in gate(base, cand, test=test).cells}
    suite = suite_compare("cand", [cand], "base", [base], test=test)
    summarised = {(c.split, c.measure): c for c in suite.cells}
    entries = [e for e in collect_runs(results) if e.rel.startswith(f"{group}/")]
    (board,) = build_tables(group_models(entries), baseline=f"{group}/base", test=test)
    cells = board.variants[board.baseline][f"{group}--cand"]
    boarded = {(column.split, column.measure): cell for column, cell in zip(board.columns, cells)}
    assert set(compared) == set(gated) == set(summarised) == set(boarded) and len(compared) == 12
    return table, compared, gated, suite, summarised, boarded


@pytest.mark.parametrize("test", ["t", "randomization"])
def test_every_report_gives_the_same_changes_and_p_values(results, test):
    table, compared, gated, _, summarised, boarded = _four_reports(results, "pair", test)
    assert table.n_tests == 12
    for key, row in compared.items():
        gated_cell, suite_cell, (text, _, title, rel, p_holm) = gated[key], summarised[key], boarded[key]
        assert row.p is not None and row.p == gated_cell.p == suite_cell.p
        assert row.p_holm == gated_cell.p_holm == suite_cell.p_holm == p_holm
        assert row.significant == suite_cell.significant == text.endswith("*")
        assert row.delta == gated_cell.delta == row.value - row.baseline_value
        assert row.rel_change == relative_change(suite_cell.run_mean, suite_cell.baseline_mean)
        assert suite_cell.ratio == row.value / row.baseline_value
        assert rel == round(row.rel_change, 4) and text.startswith(f"{row.rel_change:+.1f}%")
        assert f"{row.n_pairs} queries" in title


def test_a_zero_baseline_is_tested_and_has_no_relative_change_anywhere(results):
    table, compared, gated, suite, summarised, boarded = _four_reports(results, "zero", "t")
    row, gated_cell, suite_cell, cell = compared[ZERO], gated[ZERO], summarised[ZERO], boarded[ZERO]
    assert row.baseline_value == 0.0 and row.delta == row.value > 0
    assert row.rel_change is None and suite_cell.ratio is None and cell[3] is None  # one representation
    assert row.p is not None and row.p == gated_cell.p == suite_cell.p  # still tested ...
    assert row.p_holm == gated_cell.p_holm == suite_cell.p_holm == cell[4]  # ... and in Holm's family
    assert table.n_tests == 12
    # rendered as "n/a" by every report; JSON null
    assert cell[0].rstrip("*") == "n/a" and "no relative change" in cell[2]
    assert f"{row.value:.3f} n/a" in format_table(table)
    doc = json.loads(format_json(table))
    assert next(r for r in doc["rows"] if (r["run"], r["split"], r["measure"]) == ("cand", *ZERO))["rel_change"] is None
    zero_shot = next(line for line in comparison_markdown(suite).splitlines() if line.startswith("| zero_shot"))
    assert zero_shot.split(" | ")[2].startswith("n/a") and "(n/a;" in zero_shot
    assert suite_cell.to_json()["ratio"] is None and suite_cell.to_json()["seed_ratios"] == [None]


def test_one_comparability_rule_everywhere(results, tmp_path):
    """A run sampled another way (the rule's strictest field) is refused, or marked by the leaderboard."""
    base, cand = load_run(results / "pair" / "base"), load_run(results / "pair" / "cand")
    other = replace(cand, protocol={**cand.protocol, "sampling": "uniform"})
    needle = "cand differs from base in protocol sampling"
    with pytest.raises(IncomparableRuns, match=needle):
        compare_runs([other], ["cand"], base, baseline_label="base")
    with pytest.raises(GclError, match="candidate differs from baseline in protocol sampling"):
        gate(base, other)
    with pytest.raises(GclError, match=needle):
        suite_compare("cand", [other], "base", [base])
    marked = compare(Side("base", (base,)), [Side("cand", (other,))], measures=["ERR"],
                     options=CompareOptions(incomparable="mark"))
    assert all(c.incomparable.startswith(needle) and c.p is None for c in marked.cells_of("cand"))
    assert marked.n_tests == 0
    forced = compare_runs([other], ["cand"], base, baseline_label="base", force=True)
    assert forced.notes[0].startswith(f"forced: {needle}")


def test_runs_recorded_before_the_grade_and_tie_rules_read_as_the_earlier_rules(results):
    """A run without protocol grades/ties is the earlier protocol: comparable with its own kind only."""
    base, cand = load_run(results / "pair" / "base"), load_run(results / "pair" / "cand")
    assert base.protocol["grades"] == "reference" and base.protocol["ties"] == "score desc, doc id desc"
    earlier = {k: v for k, v in cand.protocol.items() if k not in ("grades", "ties")}
    old_cand, old_base = replace(cand, protocol=earlier), replace(base, protocol=dict(earlier))
    needle = ("cand differs from base in protocol grades ('integer-preserving' vs 'reference'), "
              "protocol ties ('score desc, corpus order' vs 'score desc, doc id desc')")
    with pytest.raises(IncomparableRuns, match=re.escape(needle)):
        compare_runs([old_cand], ["cand"], base, baseline_label="base")
    assert compare_runs([old_cand], ["cand"], old_base, baseline_label="base").cells_of("cand")


def test_seed_averaged_sides_pair_query_by_query(results):
    """A side of two seeds tests the per-query mean of its seeds; its value is the mean of the seeds' means."""
    base, cand = load_run(results / "pair" / "base"), load_run(results / "pair" / "cand")
    two = Side("cand", (cand, base))
    comparison = compare(Side("base", (base,)), [two], measures=["nDCG@10"], splits=["in_domain"])
    cell = comparison.cell("cand", "in_domain", "nDCG@10")
    assert cell.value == pytest.approx((cand.metric("in_domain", "nDCG@10") + base.metric("in_domain", "nDCG@10")) / 2)
    averaged = two.scores("in_domain")["nDCG@10"]
    assert averaged.to_numpy() == pytest.approx((cand.per_query.query("split == 'in_domain'")
                                                 .set_index("qid")["nDCG@10"] + base.per_query
                                                 .query("split == 'in_domain'").set_index("qid")["nDCG@10"])
                                                .sort_index().to_numpy() / 2)
