"""The leaderboard in a real headless Chromium: loads without console errors, sorts, filters, fits a
1,280-px screen, screenshots.

Driven by Selenium with the system's chromedriver (Debian: `apt-get install -y chromium
chromium-driver`); the driver path is given explicitly, so Selenium Manager never runs and nothing
is downloaded. Skipped only when neither Chromium nor its driver is installed; CI installs both.
Screenshots go to the test's tmp folder and, when GCL_EVAL_SCREENSHOT_DIR is set, there too.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from leaderboard.build import build_site
from leaderboard_fixtures import SEEDED_LABEL, SUITE, make_results

SEEDED_SLUG = f"synth-s3--{SUITE}--{SEEDED_LABEL}"
COMMITTED_SITE = Path(__file__).resolve().parents[1] / "leaderboard" / "site"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1500,1000")

pytestmark = pytest.mark.skipif(CHROMIUM is None and CHROMEDRIVER is None,
                                reason="Chromium and chromedriver are not installed "
                                       "(apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    results = make_results(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("site-parent") / "site"
    build_site(results, out, baseline="bm25")
    return out


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM and CHROMEDRIVER, (f"need both Chromium ({CHROMIUM}) and chromedriver ({CHROMEDRIVER}): "
                                       "apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service  # an explicit driver path: Selenium Manager never runs

    profile = tempfile.mkdtemp(prefix="gcl-eval-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """A PNG of the whole page (not only the window), via the DevTools protocol."""
    width, height = driver.execute_script(
        "const d = document.documentElement; return [d.scrollWidth, Math.min(d.scrollHeight, 8000)];")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path = tmp_path / name
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("GCL_EVAL_SCREENSHOT_DIR"):
        target = Path(os.environ["GCL_EVAL_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path


def column(table, index: int) -> list[str]:
    """The sort values of one column of a table's visible rows, top to bottom."""
    return table.parent.execute_script(
        "return Array.from(arguments[0].tBodies[0].rows).filter(r => !r.hidden)"
        ".map(r => r.cells[arguments[1]].dataset.sortValue);", table, index)


def test_index_loads_sorts_filters_and_exports(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((site / "index.html").as_uri())
    assert browser.title == "gcl-eval leaderboard"
    assert severe(browser) == []
    rows = browser.find_elements(By.CSS_SELECTOR, "table.lb tbody tr")
    assert len(rows) == 11 and all(r.is_displayed() for r in rows)

    # one row per model: the seeds of a suite label are one row with mean ± std and a rank
    table = browser.find_element(By.CSS_SELECTOR, "section.board[data-track='text'] table")
    seeded = table.find_element(By.CSS_SELECTOR, f"tr[data-slug='{SEEDED_SLUG}']")
    assert seeded.find_element(By.CSS_SELECTOR, "td.model a").text == SEEDED_LABEL
    assert "3 seeds" in seeded.find_element(By.CSS_SELECTOR, "td.model").text
    assert seeded.find_element(By.CSS_SELECTOR, "td.metric .sd").text.startswith("±0.")
    assert column(table, 0) == ["1", "2", "3", "4"]  # ranked by in_domain nDCG@10

    # sorting: in_domain ERR orders the rows differently from the rank; the rank header restores it
    initial = column(table, 1)
    header = table.find_element(By.CSS_SELECTOR, "th[data-index='3']")  # in_domain ERR
    assert header.text.startswith("ERR")
    header.click()
    values = [float(v) for v in column(table, 3)]
    assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
    assert column(table, 1) != initial
    header.click()
    assert [float(v) for v in column(table, 3)] == sorted(values)
    assert header.get_attribute("aria-sort") == "ascending"
    table.find_element(By.CSS_SELECTOR, "th[data-index='0']").click()
    assert column(table, 0) == ["1", "2", "3", "4"] and column(table, 1) == initial
    model = table.find_element(By.CSS_SELECTOR, "th[data-index='1']")
    model.click()
    labels = column(table, 1)
    assert labels == sorted(labels, key=str.lower) and labels[0] == "<script>alert(1)</script>"

    # filters hide rows (and tables left empty); reset shows all again
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet='track']")).select_by_value("image")
    visible = [r for r in rows if r.is_displayed()]
    assert len(visible) == 3 and {r.get_attribute("data-track") for r in visible} == {"image"}
    assert browser.find_element(By.ID, "shown").text == "3 of 11 models shown"
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-facet='training']")).select_by_value("zero-shot")
    assert [r.get_attribute("data-slug") for r in rows if r.is_displayed()] == ["synth-s3--clip-zs"]
    csv = browser.execute_script("return window.leaderboardCsv();").strip().split("\r\n")
    assert csv[0].startswith("dataset,track,rank,model,model folder,seeds,family,training,baseline,"
                             "in_domain nDCG@10,in_domain nDCG@10 std,")
    assert len(csv) == 2 and csv[1].startswith("synth-s3,image,3,vitb32-clip-zs,synth-s3/clip-zs,1,clip,zero-shot")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type='reset']").click()
    assert sum(r.is_displayed() for r in rows) == 11

    # baseline switch: precomputed relative changes appear in the image table
    image = browser.find_element(By.CSS_SELECTOR, "section.board[data-track='image']")
    gcl = image.find_element(By.CSS_SELECTOR, "tr[data-slug='synth-s3--gcl-image'] td.metric .rel")
    assert gcl.text == ""
    Select(image.find_element(By.CSS_SELECTOR, "select.baseline")).select_by_value("synth-s3--clip-zs")
    assert gcl.text.startswith("+") and "%" in gcl.text and "Holm-adjusted" in gcl.get_attribute("title")
    base_row = image.find_element(By.CSS_SELECTOR, "tr[data-slug='synth-s3--clip-zs']")
    assert "is-baseline" in base_row.get_attribute("class")
    csv = browser.execute_script("return window.leaderboardCsv();").strip().split("\r\n")
    assert len(csv) == 12 and "in_domain nDCG@10 change %" in csv[0]
    browser.find_element(By.ID, "download-csv").click()
    assert severe(browser) == []
    screenshot(browser, tmp_path, "leaderboard-index.png")


def test_the_committed_site_fits_a_1280_pixel_screen_with_names_ranks_and_charts(browser, tmp_path):
    """leaderboard/site as a newcomer opens it: no sideways scrolling at 1,280 px, one chart per table."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1280, 1000)
    try:
        browser.get((COMMITTED_SITE / "index.html").as_uri())
        assert browser.execute_script("return window.innerWidth;") == 1280
        assert severe(browser) == []
        assert browser.execute_script("return document.documentElement.scrollWidth;") <= 1280
        for scroller in browser.find_elements(By.CSS_SELECTOR, "section.board .scroll"):
            assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth;", scroller)
        titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section.board h2")]
        assert titles[0].startswith("built-in world: default") and titles[-1].startswith(
            "built-in world: control (quality hidden)")
        assert not any("synth-" in title for title in titles)
        boards = browser.find_elements(By.CSS_SELECTOR, "section.board")
        charts = browser.find_elements(By.CSS_SELECTOR, "section.board figure.overview svg.dots")
        assert len(charts) == len(boards) == 10 and all(c.is_displayed() and c.size["height"] > 100 for c in charts)
        rows = browser.find_elements(By.CSS_SELECTOR, "table.lb tbody tr")
        assert len(rows) == 49 and {r.get_attribute("data-seeds") for r in rows} == {"1", "3"}
        multi = boards[2]
        ranks = [td.text for td in multi.find_elements(By.CSS_SELECTOR, "tbody td.rank")]
        assert ranks[0] == "1" and len(ranks) == 19
        assert "is-baseline" in multi.find_element(By.CSS_SELECTOR, "tr[data-slug='paper-table1-mini--mini-clip']"
                                                   ).get_attribute("class")
        screenshot(browser, tmp_path, "leaderboard-committed-1280.png")
    finally:
        browser.set_window_size(1500, 1000)


def test_model_page_lists_its_seeds_and_draws_its_plots(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((site / "runs" / "synth-s3--gcl-image.html").as_uri())
    assert severe(browser) == []
    plots = browser.find_elements(By.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 2
    assert all(p.is_displayed() and p.size["width"] > 300 and p.size["height"] > 200 for p in plots)
    assert browser.find_element(By.TAG_NAME, "h1").text == "vitb32-gcl"
    screenshot(browser, tmp_path, "leaderboard-run.png")
    browser.get((site / "runs" / f"{SEEDED_SLUG}.html").as_uri())
    seeds = browser.find_elements(By.CSS_SELECTOR, "table.seeds tbody tr[data-run]")
    assert [r.find_element(By.TAG_NAME, "th").text for r in seeds] == ["0", "1", "2"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "details.seed-prov")) == 3
    browser.find_element(By.LINK_TEXT, "← all models").click()
    assert browser.title == "gcl-eval leaderboard" and severe(browser) == []
