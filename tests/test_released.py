"""The paper's data and released models, one command each: registry names wherever a dataset is taken, a
released-style preset fetched and evaluated on "marqo-gs-10m", and its reported numbers shown marked and
untested in compare and on the leaderboard.

A miniature of the published archives (tests/test_data_get.py's builder, in the layout of the full
dataset) and a tiny-clip checkpoint are served by a local HTTP server acting as the mirror, so the
official URLs in the registry and the preset are never asked.
"""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch

from file_server import FileServer
from gcl_eval.data import download as download_module
from gcl_eval.data.get import cached_folder
from gcl_eval.experiments.preset import load_preset, preset_names
from test_data_get import DATA_FILES, GT_FILE, _published, _tar, miniature  # noqa: F401 (miniature: a fixture)

NAME, TEXT, IMAGES, WEIGHTS = "marqo-gs-10m", "marqo-gs-dataset.tar", "images_archive.tar", "tiny-released.pt"
OFFICIAL = "https://marqo-gcl-public.s3.us-west-2.amazonaws.com/v1/"
REPORTED = {"nDCG@10": 0.690, "ERR": 0.630, "RBP(p=0.9)": 0.535}
RELEASED = {"marqo-gcl-vitl14-124": ("ViT-L-14", "marqo-gcl-vitl14-124-gs-full_states.pt", (0.690, 0.630, 0.535)),
            "marqo-gcl-vitb32-127": ("ViT-B-32", "marqo-gcl-vitb32-127-gs-full_states.pt", (0.683, 0.689, 0.515)),
            "gcl-vitl14-120": ("ViT-L-14", "gcl-vitl14-120-gs-full-states.pt", (0.603, 0.562, 0.467)),
            "gcl-vitb32-117": ("ViT-B-32", "gcl-vitb32-117-gs-full-states.pt", (0.577, 0.554, 0.446)),
            "clip-vitl14-110": ("ViT-L-14", "clip-vitl14-110-gs-full-states.pt", (0.310, 0.093, 0.252)),
            "gcl-e5l-113": ("e5-large-v2", "gcl-e5l-113-gs-full-states.pt", (0.431, 0.400, 0.347)),
            "gcl-robbxlm-105": ("xlm-roberta-base-ViT-B-32", "gcl-robbxlm-105-gs-full-states.pt",
                                (0.441, 0.404, 0.355))}


@pytest.fixture(scope="module")
def archives(miniature):  # noqa: F811
    """The miniature as the full dataset's archives: marqo-gs-dataset/marqo_gs_full_10m/ and images_archive/."""
    published = {name: _published(miniature.source / name) for name in DATA_FILES}
    published[GT_FILE] = (miniature.source / GT_FILE).read_bytes()
    text = _tar({f"marqo-gs-dataset/marqo_gs_full_10m/{name}": data for name, data in published.items()})
    images = _tar({f"images_archive/{p.name}": p.read_bytes() for p in sorted((miniature.source / "images").iterdir())})
    from gcl_eval.retrieval.models import load_open_clip

    buffer = io.BytesIO()
    torch.save({"epoch": 1, "name": "tiny", "state_dict": load_open_clip("tiny-clip", seed=2).model.state_dict(),
                "optimizer": {"state": {}, "param_groups": []}}, buffer)
    return {TEXT: text, IMAGES: images, WEIGHTS: buffer.getvalue()}


@pytest.fixture
def mirror(archives, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(download_module, "BACKOFF", 0.0)
    srv = FileServer()
    srv.files.update(archives)
    srv.start()
    monkeypatch.setenv("GCL_EVAL_MIRROR", srv.url)
    yield srv
    srv.stop()


@pytest.fixture
def released_preset(tmp_path):
    """A released-style preset on tiny-clip: a checkpoint URL, marqo-gs-10m, reported numbers."""
    path = tmp_path / "tiny-released.toml"
    path.write_text(f'''description = "A released checkpoint in miniature"
family = "released"
track = "multi"
needs = ["gpu", "network"]
dataset = "{NAME}"
[model]
kind = "open_clip"
arch = "tiny-clip"
pretrained = "{OFFICIAL}{WEIGHTS}"
[eval]
doc_fields = {{ title = 0.5, image = 0.5 }}
[reported]
source = "a test README"
in_domain = {{ "nDCG@10" = 0.690, ERR = 0.630, "RBP(p=0.9)" = 0.535 }}
''')
    return path


def _run(gcl, *args):
    result = gcl("run", "--queries", "20", "--top-k", "50", "--workers", "0", *args)
    assert result.code == 0, result.err
    return result


def error_line(result) -> str:
    errors = [line for line in result.error_lines if line.startswith("gcl-eval: error:")]
    assert result.code == 2 and len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0]


# ------------------------------------------------------------------------------------------ presets


def test_released_presets_parse_list_and_carry_url_dataset_and_reported_numbers(gcl):
    listed = {p["name"]: p for p in gcl("models", "--family", "released", "--json").json()}
    assert set(listed) == {*RELEASED, "marqo-gcl-e5-large-v2-130"}
    for name, (arch, file, (ndcg, err, rbp)) in RELEASED.items():
        preset = load_preset(name)
        assert preset.model == {"kind": "open_clip", "arch": arch, "pretrained": OFFICIAL + file}
        assert preset.dataset == NAME and not preset.trains and preset.family == "released"
        assert preset.reported.values == {"in_domain": {"nDCG@10": ndcg, "ERR": err, "RBP(p=0.9)": rbp}}
        fields = preset.doc_fields.as_dict()
        assert fields == ({"title": 1.0} if preset.track == "text" else {"image": 0.5, "title": 0.5}), name
        assert listed[name]["reported"]["values"]["in_domain"]["nDCG@10"] == ndcg
    text = load_preset("marqo-gcl-e5-large-v2-130")
    assert text.model == {"kind": "text", "text_model": "Marqo/marqo-gcl-e5-large-v2-130", "prefixes": "e5",
                          "max_length": 77}
    assert text.reported.value("in_domain", "RBP(p=.9)") == 0.374
    assert "marqo-gcl-vitl14-124" in gcl("models").out


def test_the_text_tower_configs_the_released_models_need_are_known():
    from gcl_eval.retrieval.models import open_clip_module

    known = open_clip_module().list_models()
    assert "e5-large-v2" in known and "xlm-roberta-base-ViT-B-32" in known


def test_the_paper_lineup_names_its_dataset_and_the_cpu_presets_do_not():
    for name in preset_names():
        preset = load_preset(name)
        assert (preset.dataset == NAME) == ("gpu" in preset.needs), name


@pytest.mark.parametrize("body, needle", [
    ('dataset = "nope"\n', "dataset 'nope' is not one of"),
    ('[reported]\nsource = "x"\nin_domain = { "nDCG@10" = 0.5 }\n', "need the preset's dataset"),
    (f'dataset = "{NAME}"\n[reported]\nin_domain = {{ "nDCG@10" = 0.5 }}\n', "reported.source is required"),
    (f'dataset = "{NAME}"\n[reported]\nsource = "x"\nsomewhere = {{ "nDCG@10" = 0.5 }}\n', "reported.somewhere"),
    (f'dataset = "{NAME}"\n[reported]\nsource = "x"\nin_domain = {{ "nDCG@10" = 69.0 }}\n', r"in \[0, 1\]"),
    (f'dataset = "{NAME}"\n[reported]\nsource = "x"\nin_domain = {{ "Bogus" = 0.5 }}\n', "Bogus"),
])
def test_bad_dataset_or_reported_tables_are_one_line_errors(tmp_path, body, needle):
    from gcl_eval.util.errors import GclError

    base = load_preset("bm25").path.read_text()
    head, _, rest = base.partition("[model]")
    path = tmp_path / "bad.toml"
    path.write_text(head + body.split("[reported]")[0] + "[model]" + rest
                    + ("[reported]" + body.split("[reported]")[1] if "[reported]" in body else ""))
    with pytest.raises(GclError, match=needle):
        load_preset(path)


# ------------------------------------------------------------------------------------------ registry names


def test_an_unknown_name_is_one_line_naming_the_registry(gcl, tmp_path):
    line = error_line(gcl("run", "--model", "bm25", "--data", "no-such-set", "--out", tmp_path / "r"))
    assert "no-such-set: no such dataset folder, nor a registered dataset" in line and NAME in line


def test_a_registry_name_is_fetched_once_and_then_read_from_the_cache(gcl, mirror, tmp_path):
    checked = gcl("data", "check", NAME)
    assert checked.code == 0, checked.err
    assert f"dataset {NAME} is not in the cache: fetching it (text only)" in checked.err
    assert mirror.requests_for(IMAGES) == [] and len(mirror.requests_for(TEXT)) == 1
    run = _run(gcl, "--model", "bm25", "--data", NAME, "--out", tmp_path / "bm25", "--json")
    assert len(mirror.requests_for(TEXT)) == 1 and "fetching" not in run.err
    assert run.json()["dataset"]["path"] == str(cached_folder(NAME))
    assert "reported" not in run.json()["model"]


def test_a_suite_dry_run_on_a_registry_name_downloads_nothing(gcl, mirror, tmp_path):
    result = gcl("suite", "paper-table1-mini", "--data", NAME, "--seeds", "1", "--dry-run", "--out", tmp_path / "s")
    assert result.code == 0, result.err
    assert mirror.requests == [] and "(to run)" in result.out


def test_train_takes_a_registry_name_and_an_image_folder(gcl, mirror, tmp_path):
    images = tmp_path / "elsewhere"
    assert gcl("data", "get", NAME).code == 0
    shutil.copytree(cached_folder(NAME) / "images", images / "images")
    result = gcl("train", "--arch", "tiny-clip", "--data", NAME, "--images", images, "--out", tmp_path / "t",
                 "--max-steps", "1", "--batch-size", "16", "--workers", "0")
    assert result.code == 0, result.err
    shutil.rmtree(cached_folder(NAME) / "images")  # the re-rooted folder is the one read
    again = gcl("train", "--arch", "tiny-clip", "--data", NAME, "--images", images, "--out", tmp_path / "u",
                "--max-steps", "1", "--batch-size", "16", "--workers", "0")
    assert again.code == 0, again.err


# ------------------------------------------------------------------------------------------ released models


def test_a_released_preset_runs_in_one_command_and_reports_beside_measured(gcl, mirror, released_preset, tmp_path):
    first = _run(gcl, "--model", released_preset, "--out", tmp_path / "runs" / "released", "--json")
    assert f"dataset {NAME} is not in the cache: fetching it (with its images)" in first.err
    if not torch.cuda.is_available():
        assert "no GPU here: evaluating tiny-released on the CPU, about" in first.err
    model = first.json()["model"]
    assert model["source"] == OFFICIAL + WEIGHTS and len(model["checkpoint_sha256"]) == 64
    assert model["reported"] == {"source": "a test README", "dataset": NAME, "values": {"in_domain": REPORTED}}
    assert mirror.requests_for(WEIGHTS) == [None]
    seen = len(mirror.requests)
    again = _run(gcl, "--model", released_preset, "--out", tmp_path / "again", "--json")
    assert len(mirror.requests) == seen and again.json()["splits"] == first.json()["splits"]
    _run(gcl, "--model", "bm25", "--data", NAME, "--out", tmp_path / "runs" / "bm25")
    _check_compare(gcl, tmp_path / "runs")
    _check_leaderboard(gcl, tmp_path / "runs", tmp_path / "site")


def _check_compare(gcl, runs):
    doc = gcl("compare", runs / "released", "--baseline", runs / "bm25", "--format", "json").json()
    reported = [row for row in doc["rows"] if row["run"] == "tiny-released [reported]"]
    assert len(reported) == 12 and all(row["p"] is None and row["delta"] is None for row in reported)
    assert {(r["split"], r["measure"]): r["value"] for r in reported if r["value"] is not None} == \
        {("in_domain", m): v for m, v in REPORTED.items()}
    assert all(row["reported"] for row in reported)
    tested = [row for row in doc["rows"] if row["p"] is not None]
    assert doc["n_tests"] == len(tested) == 12 and not any(row["reported"] for row in tested)
    table = gcl("compare", runs / "released", "--baseline", runs / "bm25").out
    assert "tiny-released [reported]" in table and "0.690" in table
    assert "note: rows marked [reported] hold the numbers published for the model" in table
    plain = gcl("compare", runs / "released", "--baseline", runs / "bm25", "--format", "csv").out
    assert plain.splitlines()[0].endswith(",reported")


def _check_leaderboard(gcl, runs, site):
    assert gcl("leaderboard", "build", runs, "--out", site).code == 0
    page = (site / "index.html").read_text()
    footer = page[page.index("<tfoot>"):page.index("</tfoot>")]
    assert "tiny-released [reported]" in footer and "0.6900" in footer and "a test README" in footer
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    assert "[reported]" not in body
    manifest = json.loads((site / "site.json").read_text())
    assert {t["track"]: t["reported"] for t in manifest["tables"]} == {"text": [],
                                                                       "multi": ["tiny-released [reported]"]}
