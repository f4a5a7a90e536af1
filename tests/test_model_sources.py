"""Model sources: checkpoint URLs (cached, verified, mirrored), the released checkpoint layouts, hf-hub: models
and Hugging Face text models offline.

Checkpoints are tiny-clip weights served by the local HTTP server of tests/file_server.py; nothing
leaves this machine (HF_HUB_OFFLINE=1, tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import socket

import pytest
import torch

from file_server import FileServer
from gcl_eval.data import download as download_module
from gcl_eval.retrieval.model_source import fetch_checkpoint, hub_offline
from gcl_eval.util.paths import cache_dir

BASE = ["eval", "--arch", "tiny-clip", "--queries", "20", "--top-k", "30", "--workers", "0", "--batch-size", "64",
        "--no-cache", "--json"]
LAYOUTS = ("plain", "ddp", "training")


def _layout(state: dict, layout: str):
    """The checkpoint layouts the released files come in."""
    if layout == "plain":
        return state
    wrapped = {"module." + key: value for key, value in state.items()}  # saved from a DDP-wrapped model
    if layout == "ddp":
        return {"state_dict": wrapped}
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    return {"epoch": 20, "name": "gcl-tiny", "state_dict": wrapped, "optimizer": optimizer}


def _bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """tiny-clip weights (seed 5) as a local file and in each layout's bytes."""
    from gcl_eval.retrieval.models import load_open_clip

    state = load_open_clip("tiny-clip", seed=5).model.state_dict()
    local = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(state, local)
    return local, {layout: _bytes(_layout(state, layout)) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("sources", "--queries", "40", "--docs-per-query", "10", "--image-size", "16", "--seed", "3")


@pytest.fixture
def server(weights, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("GCL_EVAL_MIRROR", raising=False)
    monkeypatch.setattr(download_module, "BACKOFF", 0.0)
    srv = FileServer()
    srv.files.update({f"{layout}.pt": blob for layout, blob in weights[1].items()})
    srv.start()
    yield srv
    srv.stop()


def error_line(result) -> str:
    errors = [line for line in result.error_lines if line.startswith("gcl-eval: error:")]
    assert result.code == 2 and len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0]


def _eval(gcl, data, out, *extra):
    result = gcl(*BASE, "--data", data, "--out", out, *extra)
    assert result.code == 0, result.err
    return result.json()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ URLs


def test_every_released_layout_from_a_url_evaluates_like_the_local_file(gcl, data, server, weights, tmp_path):
    local, blobs = weights
    expected = _eval(gcl, data, tmp_path / "local", "--checkpoint", local)
    for layout in LAYOUTS:
        url = f"{server.url}{layout}.pt"
        got = _eval(gcl, data, tmp_path / layout, "--checkpoint", url)
        assert got["splits"] == expected["splits"], layout
        assert got["model"]["source"] == url
        assert got["model"]["checkpoint_sha256"] == hashlib.sha256(blobs[layout]).hexdigest()


def test_a_second_use_makes_no_request(gcl, data, server, tmp_path):
    url = f"{server.url}plain.pt"
    first = _eval(gcl, data, tmp_path / "a", "--checkpoint", url)
    assert len(server.requests_for("plain.pt")) == 1
    again = _eval(gcl, data, tmp_path / "b", "--checkpoint", url)
    assert len(server.requests_for("plain.pt")) == 1 and again["splits"] == first["splits"]


def test_a_mirror_serves_a_checkpoint_url(gcl, data, server, tmp_path, monkeypatch):
    official = f"http://127.0.0.1:{_closed_port()}/v1/plain.pt"
    monkeypatch.setenv("GCL_EVAL_MIRROR", server.url)
    got = _eval(gcl, data, tmp_path / "r", "--checkpoint", official)
    assert got["model"]["source"] == official and server.requests_for("plain.pt") == [None]
    monkeypatch.delenv("GCL_EVAL_MIRROR")
    assert fetch_checkpoint(official).path.is_file()  # cached under the official URL: no request


def test_wrong_sha256_exits_2_and_keeps_nothing(gcl, data, server, tmp_path):
    line = error_line(gcl(*BASE, "--data", data, "--out", tmp_path / "r", "--checkpoint", f"{server.url}plain.pt",
                          "--sha256", "0" * 64))
    assert "sha256 mismatch" in line and "removed" in line
    assert not [p for p in cache_dir("models").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert not (tmp_path / "r").exists()


def test_http_errors_are_one_line(gcl, data, server, tmp_path):
    line = error_line(gcl(*BASE, "--data", data, "--out", tmp_path / "r", "--checkpoint", f"{server.url}nope.pt"))
    assert f"{server.url}nope.pt: HTTP 404 Not Found" in line and "--mirror" in line
    server.statuses["plain.pt"] = 503
    line = error_line(gcl(*BASE, "--data", data, "--out", tmp_path / "r", "--checkpoint", f"{server.url}plain.pt"))
    assert "HTTP 503" in line and f"({download_module.RETRIES + 1} tries)" in line


def test_unreachable_host_is_one_line_naming_the_url_and_the_mirror(gcl, data, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("GCL_EVAL_MIRROR", raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/v1/model.pt"
    line = error_line(gcl(*BASE, "--data", data, "--out", tmp_path / "r", "--checkpoint", url))
    assert f"cannot reach {url}" in line and "--mirror" in line


# ------------------------------------------------------------------------------------------ the hub, offline


def test_hf_hub_model_offline_and_not_cached_is_one_line(gcl, data, tmp_path):
    assert hub_offline()
    for args in (["--arch", "hf-hub:nobody/not-cached"], ["--checkpoint", "hf-hub:nobody/not-cached"]):
        line = error_line(gcl(*BASE, "--data", data, "--out", tmp_path / "r", *args))
        assert "hf-hub:nobody/not-cached is not in the Hugging Face cache" in line and "HF_HUB_OFFLINE=1" in line
        assert "--checkpoint FILE" in line


def test_a_hub_text_tower_offline_and_not_cached_is_one_line(data, gcl, tmp_path):
    line = error_line(gcl(*BASE, "--arch", "e5-large-v2", "--fields", "title=1", "--data", data,
                          "--out", tmp_path / "r"))
    assert "intfloat/e5-large-v2" in line and "not in the Hugging Face cache" in line


def test_a_hub_text_model_offline_and_not_cached_is_one_line(gcl, data, tmp_path):
    result = gcl("run", "--model", "marqo-gcl-e5-large-v2-130", "--data", data, "--device", "cpu",
                 "--queries", "5", "--out", tmp_path / "r")
    line = error_line(result)
    assert "Marqo/marqo-gcl-e5-large-v2-130" in line and "HF_HUB_OFFLINE=1" in line and "local model folder" in line
    assert not (tmp_path / "r").exists()


def test_train_starts_from_a_checkpoint_url_through_the_mirror(gcl, data, server, tmp_path):
    official = f"http://127.0.0.1:{_closed_port()}/v1/ddp.pt"
    result = gcl("train", "--arch", "tiny-clip", "--pretrained", official, "--mirror", server.url, "--data", data,
                 "--out", tmp_path / "t", "--max-steps", "1", "--batch-size", "16", "--workers", "0", "--json")
    assert result.code == 0, result.err
    assert server.requests_for("ddp.pt") == [None]
