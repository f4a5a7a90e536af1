"""`gcl-eval leaderboard build`: the static site from run folders made here with stand-in retrievers."""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from gcl_eval.measures import stats
from gcl_eval.report.suite_summary import compare as suite_compare
from gcl_eval.report.suite_summary import comparison_markdown
from gcl_eval.util.errors import GclError
from leaderboard.build import build_site, build_tables, collect_runs, group_models
from leaderboard.runs import dataset_order, dataset_title
from leaderboard.svg import Series, line_plot, nice_ticks
from leaderboard.tables import Column, _ranks
from leaderboard_fixtures import SEEDED_LABEL, SEEDS, SUITE, XSS_PRESET, make_results

SEEDED_SLUG = f"synth-s3--{SUITE}--{SEEDED_LABEL}"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def site(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site-parent") / "site"
    build_site(results, out, baseline="bm25")
    return out


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def test_build_writes_one_table_per_dataset_and_track_and_a_page_per_model(results, tmp_path, gcl):
    out = tmp_path / "site"
    result = gcl("leaderboard", "build", results, "--out", out, "--baseline", "bm25")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {out / 'index.html'}: 13 runs, 11 models in 5 tables"
    manifest = json.loads((out / "site.json").read_text())
    assert [(t["dataset"], t["track"]) for t in manifest["tables"]] == [
        ("synth-s3", "text"), ("synth-s3", "image"), ("synth-s3", "multi"), ("synth-s3", "unknown"),
        ("synth-s5", "text")]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(f"{s}.html" for s in manifest["models"])
    assert manifest["models"][SEEDED_SLUG]["runs"] == [f"synth-s3/{SUITE}/{SEEDED_LABEL}/seed-{k}" for k in SEEDS]
    assert manifest["tables"][0]["baseline"] == "synth-s3--bm25"
    assert manifest["tables"][1]["baseline"] == ""  # bm25 is not in the image table
    index = Tags((out / "index.html").read_text())
    sections = [a for tag, a in index.tags if tag == "section" and "board" in a.get("class", "")]
    assert [(s["data-dataset"], s["data-track"]) for s in sections] == [
        (t["dataset"], t["track"]) for t in manifest["tables"]]
    rows = [a for tag, a in index.tags if tag == "tr" and "data-slug" in a]
    assert len(rows) == 11 and sum(int(r["data-seeds"]) for r in rows) == 13
    plain = next(r for r in rows if r["data-slug"] == "synth-s3--plain-eval")  # no preset/track/trains keys
    assert (plain["data-track"], plain["data-family"], plain["data-training"]) == ("unknown", "unknown", "unknown")
    assert '<a href="runs/synth-s3--plain-eval.html">plain-eval</a>' in (out / "index.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_seeds_are_one_row_with_mean_and_std_and_listed_on_the_model_page(site, results):
    models = {m.slug: m for m in group_models(collect_runs(results))}
    seeded = models[SEEDED_SLUG]
    assert (seeded.label, seeded.suite, seeded.n_seeds, seeded.rel) == (
        SEEDED_LABEL, SUITE, 3, f"synth-s3/{SUITE}/{SEEDED_LABEL}")
    values = [e.run.metric("in_domain", "nDCG@10") for e in seeded.runs]
    assert len(set(values)) == 3  # the seeds differ
    assert seeded.mean("in_domain", "nDCG@10") == pytest.approx(np.mean(values))
    assert seeded.std("in_domain", "nDCG@10") == pytest.approx(np.std(values, ddof=1))
    index = (site / "index.html").read_text()
    row = index[index.index(f'<tr data-slug="{SEEDED_SLUG}"'):]
    row = row[:row.index("</tr>")]
    assert f'<span class="val">{np.mean(values):.4f}</span><span class="sd">±{np.std(values, ddof=1):.4f}</span>' in row
    assert "3 seeds" in row and 'data-seeds="3"' in row
    assert models["synth-s3--bm25"].std("in_domain", "nDCG@10") is None  # one seed: no spread
    page = (site / "runs" / f"{SEEDED_SLUG}.html").read_text()
    seeds = [a["data-run"] for tag, a in Tags(page).tags if tag == "tr" and "data-run" in a]
    assert seeds == [f"synth-s3/{SUITE}/{SEEDED_LABEL}/seed-{k}" for k in SEEDS]
    assert all(f"{v:.4f}" in page for v in values) and "mean over 3 seeds" in page


def _seed_averaged(model, split, measure):
    """The per-query scores of a model's seeds averaged query by query (what the engine's Side tests)."""
    frames = [e.run.per_query[e.run.per_query["split"] == split].set_index("qid")[measure].sort_index()
              for e in model.runs]
    return (sum(frames) / len(frames)).to_numpy()


def test_rows_are_ranked_and_each_row_is_tested_against_the_baseline_on_its_own(results):
    tables = build_tables(group_models(collect_runs(results)), baseline="bm25")
    text = tables[0]
    values = [m.mean("in_domain", "nDCG@10") for m in text.rows]
    assert values == sorted(values, reverse=True) and text.ranks == [1, 2, 3, 4]
    assert text.main.key == "in_domain nDCG@10"
    base = next(m for m in text.rows if m.slug == text.baseline)
    marked = tested = 0
    for model in text.rows:
        if model is base:
            continue
        # every row's 12 cells (4 splits x 3 measures) are one Holm family, as in a suite summary
        raw = [stats.paired_t_test(_seed_averaged(model, c.split, c.measure),
                                   _seed_averaged(base, c.split, c.measure))[1] for c in text.columns]
        assert len(raw) == 12
        for ci, (column, p_adj) in enumerate(zip(text.columns, stats.holm(raw))):
            text_, css, title, rel, cell_p = text.variants[base.slug][model.slug][ci]
            expected = (model.mean(column.split, column.measure) / base.mean(column.split, column.measure) - 1) * 100
            assert rel == pytest.approx(expected, abs=1e-4)
            assert cell_p == pytest.approx(p_adj)
            assert text_.endswith("*") == (p_adj <= 0.05) and ("sig" in css) == (p_adj <= 0.05)
            assert text_.startswith(f"{expected:+.1f}%") and "Holm-adjusted" in title
            marked += text_.endswith("*")
            tested += 1
    assert 0 < marked < tested == 3 * 12  # the fixtures are built so that some cells are significant, some not
    assert all(cell[:2] == ["baseline", "base"] for cell in text.variants[base.slug][base.slug])
    # every model of the table is a precomputed baseline variant
    assert set(text.variants) == {m.slug for m in text.rows}


def test_ties_share_a_rank_and_rows_without_the_main_measure_have_none():
    class Fake:
        def __init__(self, value):
            self.value = value

        def mean(self, split, measure):
            return self.value

    assert _ranks([Fake(v) for v in (0.5, 0.4, 0.4, 0.3, None)], Column("in_domain", "nDCG@10")) == \
        [1, 2, 2, 4, None]


def test_randomisation_test_and_incomparable_runs(results):
    models = [m for m in group_models(collect_runs(results)) if m.track == "image"]
    tables = build_tables(models, baseline="vitb32-clip-zs", test="randomization")
    cells = tables[0].variants[tables[0].baseline]
    assert all("paired randomisation test" in c[2] for slug, row in cells.items() for c in row
               if slug != tables[0].baseline)
    models[0].reference.protocol["top_k"] = 50  # as if evaluated with another protocol
    cells = build_tables(models, baseline="vitb32-clip-zs")[0].variants["synth-s3--clip-zs"]
    other = cells[models[0].slug]
    # the engine's reason, as compare and gate word it
    assert {c[0] for c in other} == {"n/c"} and "differs from synth-s3/clip-zs in protocol top_k (50 vs 100)" in other[0][2]


def test_repeated_baselines_pick_the_first_that_names_a_model_of_each_table(results):
    tables = build_tables(group_models(collect_runs(results)), baseline=["vitb32-clip-zs", SEEDED_LABEL, "bm25"])
    assert [t.baseline for t in tables] == [SEEDED_SLUG, "synth-s3--clip-zs", "", "", "synth-s5--bm25"]
    with pytest.raises(GclError, match="'no-such' matches no run"):
        build_tables(group_models(collect_runs(results)), baseline=["bm25", "no-such"])


@pytest.mark.parametrize("name, title", [
    ("synth-default-044789b05ed0", "built-in world: default"),
    ("synth-second-6dde79277521", "built-in world: second"),
    ("synth-control-2b9bebdac06a", "built-in world: control (quality hidden)"),
    ("marqo-gs-10m", "Marqo-GS-10M"),
    ("synth-s3", "synth-s3"),  # not a built-in world's cache name: shown as recorded
    ("synth-nosuchworld-044789b05ed0", "synth-nosuchworld-044789b05ed0"),
])
def test_datasets_are_named_for_people(name, title):
    assert dataset_title(name) == title


def test_the_main_world_comes_first_and_the_control_after_the_other_worlds():
    names = ["zzz-own", "synth-control-2b9bebdac06a", "synth-second-6dde79277521", "synth-default-044789b05ed0",
             "marqo-gs-10m"]
    assert sorted(names, key=dataset_order) == ["marqo-gs-10m", "synth-default-044789b05ed0",
                                                 "synth-second-6dde79277521", "synth-control-2b9bebdac06a",
                                                 "zzz-own"]


def test_each_table_has_an_overview_chart_of_the_main_measure(site):
    index = (site / "index.html").read_text()
    manifest = json.loads((site / "site.json").read_text())
    charts = [ET.fromstring(m) for m in re.findall(r'<svg class="plot dots".*?</svg>', index, re.S)]
    assert len(charts) == len(manifest["tables"])
    text = charts[0]
    labels = [t.find("title").text for t in text.iter("text") if t.find("title") is not None]
    assert labels == [f"{rank}. {label}" for rank, label in
                      zip(manifest["tables"][0]["ranks"], ["e5-small-ft", SEEDED_LABEL, XSS_PRESET, "bm25"])]
    markers = [m for tag in ("circle", "rect", "polygon") for m in text.iter(tag)]
    assert len(markers) == 4 + 4 * 4  # the legend's four splits, then a marker per model and split
    assert any(f"{SEEDED_LABEL} · in_domain: " in m.find("title").text and "(3 seeds)" in m.find("title").text
               for m in markers)


def test_model_names_are_escaped(site):
    for page in [site / "index.html", *(site / "runs").iterdir()]:
        text = page.read_text()
        assert "<script>alert(1)" not in text, page
        for attrs, body in Tags(text).scripts:
            assert "alert(1)" not in body or attrs.get("type") == "application/json", page
            assert attrs.get("src") == "static/site.js" or attrs.get("type") == "application/json"
    index = (site / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    page = (site / "runs" / "synth-s3--xss.html").read_text()
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page
    # the JSON with the variants carries the name too (in tooltips), with < escaped for a script element
    variants = [json.loads(body) for attrs, body in Tags(index).scripts if attrs.get("type") == "application/json"]
    assert any(XSS_PRESET in cell[2] for table in variants for row in table["synth-s3--xss"].values()
               for cell in row)


def test_site_uses_no_network_assets(site):
    files = [p for p in site.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".html", ".css", ".js", ".json"}
    for path in files:
        text = path.read_text()
        assert not re.search(r"https?://", text), path
        assert not re.search(r"""(src|href)\s*=\s*["']?//""", text), path
        assert "@import" not in text and "url(" not in text, path


def test_every_relative_link_resolves(site):
    pages = [site / "index.html", *(site / "runs").glob("*.html")]
    checked = 0
    for page in pages:
        for tag, attrs in Tags(page.read_text()).tags:
            for name in ("href", "src"):
                link = attrs.get(name)
                if link is None or link.startswith("#"):
                    continue
                assert not re.match(r"^[a-z][a-z0-9+.-]*:|^/", link), (page, link)
                target = (page.parent / link.split("#")[0]).resolve()
                assert target.is_file() and site.resolve() in target.parents, (page, link)
                checked += 1
    assert checked > 3 * len(pages)


def test_plots_are_well_formed_svg(site):
    def svgs(page):
        return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page.read_text(), re.S)]

    trained = svgs(site / "runs" / "synth-s3--gcl-image.html")
    assert len(trained) == 2
    curves, weights = trained
    lines = curves.findall("polyline")
    assert [line.find("title").text for line in lines] == ["in_domain", "novel_query", "novel_corpus", "zero_shot"]
    assert all(len(line.get("points").split()) == 100 for line in lines)
    assert len(weights.findall("polyline")) == 1
    assert "piecewise" in weights.find("title").text
    assert len(svgs(site / "runs" / "synth-s3--plain-eval.html")) == 1  # no STW: curves only
    assert "No score-to-weight function" in (site / "runs" / "synth-s3--plain-eval.html").read_text()


def test_run_page_shows_provenance(site, results):
    page = (site / "runs" / "synth-s3--gcl-image.html").read_text()
    doc = json.loads((results / "synth-s3" / "gcl-image" / "result.json").read_text())
    for needle in ["vitb32-gcl", "ab" * 32, doc["dataset"]["fingerprint"], doc["tool"]["version"],
                   "queries_per_split", "splits_s.in_domain", "MAP@1000", "corpus size", "piecewise"]:
        assert needle in page, needle


def test_line_plot_escapes_labels_and_picks_round_ticks():
    svg = line_plot([Series("<b>&", [1, 2, 3], [0.1, float("nan"), 0.3])], title="a < b", x_label="x",
                    y_label="y")
    root = ET.fromstring(svg)
    assert root.find("title").text == "a < b"
    assert [t.text for t in root.iter("text") if t.text == "<b>&"]
    assert len(root.findall("polyline")) == 2  # the NaN breaks the line
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 0.93) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 37) == [0, 10, 20, 30, 40]


def test_invalid_run_folder_is_one_line_exit_2_and_keeps_the_old_site(results, site, tmp_path, gcl):
    broken = tmp_path / "results"
    shutil.copytree(results, broken)
    (broken / "synth-s5" / "bm25" / "result.json").write_text("{")
    out = tmp_path / "site"
    shutil.copytree(site, out)
    result = gcl("leaderboard", "build", broken, "--out", out)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(broken / "synth-s5" / "bm25") in lines[0] and "not valid JSON" in lines[0]
    assert (out / "index.html").read_bytes() == (site / "index.html").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args, needle", [
    (["--baseline", "no-such-run"], "matches no run"),
    (["--alpha", "1.5"], "alpha"),
])
def test_bad_options_are_one_line_errors(results, tmp_path, gcl, args, needle):
    result = gcl("leaderboard", "build", results, "--out", tmp_path / "site", *args)
    assert result.code == 2 and needle in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "site").exists()


def test_out_must_be_a_new_folder_or_an_old_site(results, tmp_path, gcl):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    result = gcl("leaderboard", "build", results, "--out", keep)
    assert result.code == 2 and "not a leaderboard site" in result.err
    assert (keep / "todo.txt").read_text() == "mine"
    with pytest.raises(GclError, match="would replace the results"):
        build_site(results / "synth-s3", results)
    with pytest.raises(GclError, match="no run folders"):
        build_site(keep, tmp_path / "site")


def test_hidden_half_written_runs_are_skipped_and_ambiguous_baselines_refused(results, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    shutil.copytree(copy / "synth-s5" / "bm25", copy / "synth-s5" / ".bm25.tmp123")  # save_run's temp folder
    assert len(collect_runs(copy)) == 13
    shutil.copytree(copy / "synth-s5" / "bm25", copy / "synth-s5" / "bm25-again")
    with pytest.raises(GclError, match="matches 2 models of dataset synth-s5"):
        build_site(copy, tmp_path / "site", baseline="bm25")
    summary = build_site(copy, tmp_path / "site", baseline="synth-s5/bm25-again")
    manifest = json.loads((summary.out / "site.json").read_text())
    assert [t["baseline"] for t in manifest["tables"]] == ["", "", "", "", "synth-s5--bm25-again"]


def test_variants_json_is_strict_json(site):
    """No NaN/Infinity in the variants: the browser's JSON.parse rejects them."""
    for attrs, body in Tags((site / "index.html").read_text()).scripts:
        if attrs.get("type") == "application/json":
            data = json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in variants JSON"))
            for rows in data.values():
                for row in rows.values():
                    for cell in row:
                        assert cell[3] is None or math.isfinite(cell[3])


# ---------------------------------------------------------------- the committed results and site

REPO = Path(__file__).resolve().parents[1]
COMMITTED_RESULTS, COMMITTED_SITE = REPO / "leaderboard" / "results", REPO / "leaderboard" / "site"
# leaderboard/site is exactly what this command makes (docs/leaderboard.md):
#   gcl-eval leaderboard build leaderboard/results --out leaderboard/site \
#       --baseline mini-clip --baseline tiny-clip --baseline stw-constant --baseline bm25
COMMITTED_BASELINES = ["mini-clip", "tiny-clip", "stw-constant", "bm25"]


def test_the_committed_site_is_what_the_build_makes_from_the_committed_results(tmp_path):
    out = tmp_path / "site"
    build_site(COMMITTED_RESULTS, out, baseline=COMMITTED_BASELINES)
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(COMMITTED_SITE).as_posix() for p in COMMITTED_SITE.rglob("*") if p.is_file())
    assert built == committed, "rebuild leaderboard/site with the command above"
    differ = [name for name in built if (out / name).read_bytes() != (COMMITTED_SITE / name).read_bytes()]
    assert not differ, f"leaderboard/site is stale ({', '.join(differ[:5])}): rebuild it with the command above"


def test_the_committed_site_names_worlds_and_aggregates_seeds():
    manifest = json.loads((COMMITTED_SITE / "site.json").read_text())
    assert [(t["dataset"], t["track"]) for t in manifest["tables"]] == [
        ("built-in world: default", "text"), ("built-in world: default", "image"),
        ("built-in world: default", "multi"), ("built-in world: second", "text"), ("built-in world: second", "image"),
        ("built-in world: second", "multi"), ("built-in world: held out (seed 7)", "text"),
        ("built-in world: held out (seed 7)", "multi"), ("built-in world: control (quality hidden)", "image"),
        ("built-in world: control (quality hidden)", "multi")]
    assert len(manifest["models"]) == 49 and sum(len(m["runs"]) for m in manifest["models"].values()) == 117
    assert all(t["baseline"] for t in manifest["tables"])


def test_the_leaderboard_gives_the_suite_summarys_numbers_for_a_pair():
    """The control world's tiny-gcl vs tiny-clip: same ratios, Holm p-values and stars as its summary.md."""
    suite = COMMITTED_RESULTS / "paper-control-mini"
    image = [t for t in build_tables(group_models(collect_runs(suite)), baseline="tiny-clip") if t.track == "image"]
    (table,) = image
    base, run = (next(m for m in table.rows if m.label == label) for label in ("tiny-clip", "tiny-gcl"))
    (by_run_label,) = [t for t in build_tables(group_models(collect_runs(suite)), baseline="tiny-clip seed 0")
                       if t.track == "image"]
    assert table.baseline == by_run_label.baseline == base.slug  # a seed's run label names its model too
    summary = suite_compare("tiny-gcl", [e.run for e in run.runs], "tiny-clip", [e.run for e in base.runs])
    expected = comparison_markdown(summary)
    assert expected in (suite / "summary.md").read_text()  # the committed summary says the same
    cells = table.variants[base.slug][run.slug]
    assert len(cells) == len(summary.cells) == 12
    for column, (text, _, _, rel, p_holm) in zip(table.columns, cells):
        theirs = summary.cell(column.split, column.measure)
        assert p_holm == theirs.p_holm and text.endswith("*") == theirs.significant
        assert rel == pytest.approx((theirs.ratio - 1) * 100, abs=1e-4)


def test_seeds_scored_under_another_protocol_are_not_merged_into_one_model(results):
    """A suite label's seeds group into one model only when their protocols agree (else two rows)."""
    import dataclasses

    entries = collect_runs(results)
    seeded = [e for e in entries if e.run.model.get("label") == SEEDED_LABEL]
    other = dataclasses.replace(seeded[-1], run=dataclasses.replace(
        seeded[-1].run, protocol={**seeded[-1].run.protocol, "ties": "another rule"}))
    models = group_models([e for e in entries if e is not seeded[-1]] + [other])
    mine = [m for m in models if m.label == SEEDED_LABEL]
    assert sorted(m.n_seeds for m in mine) == [1, len(seeded) - 1]
