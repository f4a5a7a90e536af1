"""Your own model from Python: gcl_eval.evaluate_model and the Encoder interface (docs/evaluation.md)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gcl_eval
from gcl_eval.protocol.results import load_run
from gcl_eval.util.errors import GclError

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"


def doc_example() -> str:
    """The first python block of the doc's "Evaluate your own model from Python" section, verbatim."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Evaluate your own model from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the section has no python example"
    return blocks[0]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("api", "--queries", "120", "--docs-per-query", "20", "--seed", "2", "--image-size", "32")


def test_the_docs_example_runs_and_writes_a_run_folder(data, tmp_path, monkeypatch, capsys):
    (tmp_path / "my-dataset").symlink_to(data, target_is_directory=True)  # the name the example uses
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "doc_example"}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)
    result = namespace["result"]
    printed = float(capsys.readouterr().out.split()[-1])
    assert printed == result.splits["in_domain"]["metrics"]["nDCG@10"] > 0
    saved = load_run(tmp_path / "runs" / "hashed-bow")
    assert saved.splits == result.splits
    assert saved.model["label"] == "HashedBagOfWords" and saved.model["kind"] == "python"
    assert saved.model["track"] == "text" and saved.protocol["queries_per_split"] == 200
    again = gcl_eval.evaluate_model(namespace["HashedBagOfWords"](), data, protocol=gcl_eval.EvalProtocol(
        queries_per_split=200))  # from the embedding cache this time: the same numbers
    assert again.splits == result.splits and again.timings["embedding_cache"]["hits"] > 0


@pytest.mark.usefixtures("one_torch_thread")
def test_an_open_clip_encoder_from_python_matches_gcl_eval_eval(gcl, data, tmp_path):
    from gcl_eval.retrieval.encoders import OpenClipEncoder
    from gcl_eval.retrieval.models import load_open_clip

    cli = tmp_path / "cli"
    result = gcl("eval", "--arch", "tiny-clip", "--data", data, "--out", cli, "--queries", "30", "--top-k", "50",
                 "--workers", "0", "--batch-size", "64", "--fields", "title=0.5,image=0.5",
                 "--cold-start-fields", "title=1")
    assert result.code == 0, result.err
    encoder = OpenClipEncoder(load_open_clip("tiny-clip", seed=0), batch_size=64)
    api = gcl_eval.evaluate_model(encoder, data, fields={"title": 0.5, "image": 0.5}, cold_start_fields={"title": 1},
                                  protocol=gcl_eval.EvalProtocol(queries_per_split=30, top_k=50), name="tiny")
    expected = load_run(cli)
    assert api.splits == expected.splits
    assert api.per_query.equals(expected.per_query)
    assert api.model["track"] == "multi" and api.model["split_doc_fields"]["zero_shot"] == "title=1"


class Toy:
    """A 4-d encoder whose outputs a test can break."""

    def __init__(self, **broken):
        self.broken = broken

    def fingerprint(self):
        return self.broken.get("fingerprint", "toy/v1")

    def _rows(self, n):
        rows = np.zeros((n, 4), dtype=np.float32)
        rows[:, 0] = 1.0
        if "scale" in self.broken:
            rows *= self.broken["scale"]
        return rows.astype(self.broken.get("dtype", np.float32))

    def encode_queries(self, texts):
        rows = self._rows(len(texts))
        return rows[:-1] if self.broken.get("short") else rows

    def encode_field(self, documents, field):
        present = np.ones(len(documents), dtype=self.broken.get("mask_dtype", bool))
        return self._rows(len(documents)), present


@pytest.mark.parametrize("broken, needle", [
    ({"dtype": np.float64}, "must return float32, got float64"),
    ({"scale": 2.0}, "is not L2-normalised (norm 2)"),
    ({"scale": np.nan}, "is not L2-normalised"),
    ({"short": True}, "must return a 29 x D numpy array"),
    ({"mask_dtype": np.int8}, "presence mask must be bool"),
    ({"fingerprint": ""}, "fingerprint() must return a non-empty string"),
])
def test_a_broken_encoder_fails_with_one_line(data, broken, needle):
    with pytest.raises(GclError) as err:
        gcl_eval.evaluate_model(Toy(**broken), data, protocol=gcl_eval.EvalProtocol(queries_per_split=29), cache=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_object_without_the_methods_is_refused(data):
    with pytest.raises(GclError, match="has no fingerprint, encode_field method"):
        gcl_eval.evaluate_model(type("Half", (), {"encode_queries": lambda self, t: None})(), data)
    assert isinstance(Toy(), gcl_eval.Encoder)


def test_bad_field_weights_are_one_line(data):
    with pytest.raises(GclError, match="unknown field 'body'"):
        gcl_eval.evaluate_model(Toy(), data, fields={"body": 1.0})


def test_import_gcl_eval_stays_light():
    code = ("import sys, gcl_eval; gcl_eval.evaluate_model; gcl_eval.evaluate_run_files; gcl_eval.Encoder; "
            "print(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(AttributeError):
        gcl_eval.no_such_thing
