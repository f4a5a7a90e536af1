"""Presets meant for a GPU on a CPU: training one needs --device cpu, evaluating one runs after an estimate."""

from __future__ import annotations

import pytest

from gcl_eval.experiments.device_plan import (CPU_SECONDS_PER_8, Workload, check_device, cpu_estimate, device_note,
                                              duration, needs_gpu_here, workload)
from gcl_eval.experiments.preset import load_preset
from gcl_eval.protocol.evaluate import EvalProtocol
from gcl_eval.util.errors import GclError

pytestmark = pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="a CUDA device is here")


@pytest.fixture(scope="module")
def dataset():
    from gcl_eval.data.synth import SynthConfig
    from gcl_eval.data.synth.build import build_synthetic

    _, data, _ = build_synthetic(SynthConfig(queries=60, docs_per_query=10, seed=1, images=False), diagnostics=False)
    return data


@pytest.fixture(scope="module")
def folder(make_synth):
    return make_synth("plan", "--queries", "40", "--docs-per-query", "10", "--image-size", "16", "--seed", "3")


def _gpu_copy(tmp_path, name: str, *, drop_train: bool = False) -> str:
    """A CPU preset marked as needing a GPU (optionally without its [train] table: evaluation only)."""
    text = load_preset(name).path.read_text()
    if drop_train:
        head, _, rest = text.partition("[train]")
        text = head + "[eval]" + rest.partition("[eval]")[2]
    path = tmp_path / f"{name}-gpu.toml"
    path.write_text('needs = ["gpu"]\n' + text)
    return str(path)


def test_training_a_gpu_preset_without_a_gpu_needs_an_explicit_device():
    preset = load_preset("vitl14-gcl")
    with pytest.raises(GclError, match=r"trains on a GPU .* pass --device cpu"):
        check_device(preset, None, "cpu")
    with pytest.raises(GclError):
        check_device(preset, "auto", "cpu")
    check_device(preset, "cpu", "cpu")  # asked for: proceeds
    check_device(preset, None, "cuda")
    check_device(preset, "cuda:1", "cuda:1")
    check_device(load_preset("vitl14-zs"), None, "cpu")  # evaluation only: proceeds
    check_device(load_preset("marqo-gcl-vitl14-124"), None, "cpu")
    check_device(load_preset("tiny-gcl"), None, "cpu")
    assert needs_gpu_here(load_preset("vitl14-zs"), "cpu") and not needs_gpu_here(load_preset("vitl14-zs"), "cuda")
    assert not needs_gpu_here(load_preset("tiny-gcl"), "cpu")


def test_the_estimate_counts_what_is_encoded(dataset):
    protocol = EvalProtocol(queries_per_split=25)
    queries = sum(min(25, dataset.pairs[s]["query"].nunique()) for s in dataset.pairs)
    docs = sum(len(c) for c in dataset.corpora.values())
    assert workload(load_preset("vitl14-zs"), dataset, protocol) == Workload(docs, docs + queries)
    assert workload(load_preset("gcl-e5l-113"), dataset, protocol) == Workload(0, docs + queries)
    image_only = workload(load_preset("vitl14-gcl-image"), dataset, protocol)
    assert image_only.images == docs and image_only.texts == queries
    line = cpu_estimate(load_preset("vitl14-zs"), dataset, protocol)
    seconds = (docs * 7.4 + (docs + queries) * CPU_SECONDS_PER_8["ViT-L-14"]["text"]) / 8
    assert line.startswith("no GPU here: evaluating vitl14-zs on the CPU, about ") and duration(seconds) in line
    assert "ViT-L-14" in line and "image 7.4 s" in line and "\n" not in line
    assert "e5-large-v2" in cpu_estimate(load_preset("e5l-zs"), dataset, protocol)
    assert device_note(load_preset("vitl14-zs"), "cpu", dataset, protocol) == line
    assert device_note(load_preset("vitl14-zs"), "mps", dataset, protocol) is None  # no figures for it
    assert device_note(load_preset("vitl14-zs"), "cuda", dataset, protocol) is None
    assert device_note(load_preset("tiny-gcl"), "cpu", dataset, protocol) is None
    assert "training it on cpu" in device_note(load_preset("vitl14-gcl"), "cpu", dataset, protocol)


def test_an_architecture_without_a_figure_still_gets_one_line(dataset, tmp_path):
    own = tmp_path / "own.toml"
    own.write_text(load_preset("vitl14-zs").path.read_text().replace('"ViT-L-14"', '"ViT-H-14"'))
    line = cpu_estimate(load_preset(own), dataset, EvalProtocol())
    assert "no CPU throughput figure for ViT-H-14" in line and "images" in line


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (40, "40 s"), (600, "10 min"), (5.2 * 3600, "5.2 h"),
                                           (3 * 86400, "3.0 days")])
def test_durations_read_naturally(seconds, text):
    assert duration(seconds) == text


def test_run_refuses_to_train_a_gpu_preset_on_the_cpu_unless_asked(gcl, folder, tmp_path):
    preset = _gpu_copy(tmp_path, "tiny-gcl")
    refused = gcl("run", "--model", preset, "--out", tmp_path / "r")
    errors = [line for line in refused.error_lines if line.startswith("gcl-eval: error:")]
    assert refused.code == 2 and len(errors) == 1 and "--device cpu" in errors[0], refused.err
    assert not (tmp_path / "r").exists()
    asked = gcl("run", "--model", preset, "--data", folder, "--device", "cpu", "--max-steps", "1", "--batch-size", "32",
                "--workers", "0", "--queries", "20", "--top-k", "50", "--out", tmp_path / "r")
    assert asked.code == 0, asked.err
    assert "is meant for a GPU: training it on cpu, as --device asks" in asked.err


def test_run_evaluates_a_gpu_preset_on_the_cpu_after_an_estimate(gcl, folder, tmp_path):
    preset = _gpu_copy(tmp_path, "tiny-clip", drop_train=True)
    assert not load_preset(preset).trains
    result = gcl("run", "--model", preset, "--data", folder, "--workers", "0", "--queries", "20", "--top-k", "50",
                 "--out", tmp_path / "r")
    assert result.code == 0, result.err
    estimate = [line for line in result.error_lines if line.startswith("no GPU here")]
    assert len(estimate) == 1 and "tiny-clip on a 2-core CPU" in estimate[0]
