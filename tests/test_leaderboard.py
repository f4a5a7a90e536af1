"""`gcl-eval leaderboard build`: the static site from run folders made here with stand-in retrievers."""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gcl_eval.measures import stats
from gcl_eval.util.errors import GclError
from leaderboard.build import build_site, build_tables, collect_runs
from leaderboard.svg import Series, line_plot, nice_ticks
from leaderboard_fixtures import XSS_PRESET, make_results


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


def test_build_writes_one_table_per_dataset_and_track_and_a_page_per_run(results, tmp_path, gcl):
    out = tmp_path / "site"
    result = gcl("leaderboard", "build", results, "--out", out, "--baseline", "bm25")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {out / 'index.html'}: 10 runs in 5 tables"
    manifest = json.loads((out / "site.json").read_text())
    assert [(t["dataset"], t["track"]) for t in manifest["tables"]] == [
        ("synth-s3", "text"), ("synth-s3", "image"), ("synth-s3", "multi"), ("synth-s3", "unknown"),
        ("synth-s5", "text")]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(f"{s}.html" for s in manifest["runs"])
    assert manifest["tables"][0]["baseline"] == "synth-s3--bm25"
    assert manifest["tables"][1]["baseline"] == ""  # bm25 is not in the image table
    index = Tags((out / "index.html").read_text())
    sections = [a for tag, a in index.tags if tag == "section" and "board" in a.get("class", "")]
    assert [(s["data-dataset"], s["data-track"]) for s in sections] == [
        (t["dataset"], t["track"]) for t in manifest["tables"]]
    rows = [a for tag, a in index.tags if tag == "tr" and "data-slug" in a]
    assert len(rows) == 10
    plain = next(r for r in rows if r["data-slug"] == "synth-s3--plain-eval")  # no preset/track/trains keys
    assert (plain["data-track"], plain["data-family"], plain["data-training"]) == ("unknown", "unknown", "unknown")
    assert '<a href="runs/synth-s3--plain-eval.html">plain-eval</a>' in (out / "index.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_rows_are_best_first_and_cells_match_the_statistics(results):
    entries = collect_runs(results)
    tables = build_tables(entries, baseline="bm25")
    text = tables[0]
    values = [e.run.metric("in_domain", "nDCG@10") for e in text.rows]
    assert values == sorted(values, reverse=True)
    base = next(e for e in text.rows if e.slug == text.baseline)
    # every other row x split x measure is one test; Holm runs over all of them together
    raw, where = [], []
    for entry in text.rows:
        if entry is base:
            continue
        for ci, column in enumerate(text.columns):
            mine = entry.per_query[column.split][column.measure].to_numpy()
            theirs = base.per_query[column.split][column.measure].to_numpy()
            raw.append(stats.paired_t_test(mine, theirs)[1])
            where.append((entry, ci, column))
    assert len(raw) == 2 * 12
    adjusted = stats.holm(raw)
    marked = 0
    for (entry, ci, column), p_adj in zip(where, adjusted):
        text_, css, title, rel, cell_p = text.variants[base.slug][entry.slug][ci]
        expected = (entry.run.metric(column.split, column.measure) / base.run.metric(column.split, column.measure)
                    - 1) * 100
        assert rel == pytest.approx(expected, abs=1e-4)
        assert cell_p == pytest.approx(p_adj)
        assert text_.endswith("*") == (p_adj <= 0.05) and ("sig" in css) == (p_adj <= 0.05)
        assert text_.startswith(f"{expected:+.1f}%") and "Holm-adjusted" in title
        marked += text_.endswith("*")
    assert 0 < marked < len(raw)  # the fixtures are built so that some cells are significant, some not
    assert all(cell[:2] == ["baseline", "base"] for cell in text.variants[base.slug][base.slug])
    # every run of the table is a precomputed baseline variant
    assert set(text.variants) == {e.slug for e in text.rows}


def test_randomisation_test_and_incomparable_runs(results):
    entries = collect_runs(results)
    image = [e for e in entries if e.track == "image"]
    tables = build_tables(image, baseline="vitb32-clip-zs", test="randomization")
    cells = tables[0].variants[tables[0].baseline]
    assert all("paired randomisation test" in c[2] for slug, row in cells.items() for c in row
               if slug != tables[0].baseline)
    image[0].run.protocol["top_k"] = 50  # as if evaluated with another protocol
    cells = build_tables(image, baseline="vitb32-clip-zs")[0].variants["synth-s3--clip-zs"]
    other = cells[image[0].slug]
    # the engine's reason, as compare and gate word it
    assert {c[0] for c in other} == {"n/c"} and "differs from synth-s3/clip-zs in protocol top_k (50 vs 100)" in other[0][2]


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
    assert len(collect_runs(copy)) == 10
    shutil.copytree(copy / "synth-s5" / "bm25", copy / "synth-s5" / "bm25-again")
    with pytest.raises(GclError, match="matches 2 runs of dataset synth-s5"):
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
