"""`gcl-eval data split` and `gcl-eval data check` through the real entry point and the console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gcl_eval.data.dataset import SPLIT_STEMS, SPLITS
from gcl_eval.experiments.datasets import check_dataset_folder
from gcl_eval.util.errors import DataError
from test_data_marqo import make_marqo_folder


def write_table(path, n_queries=30, per_query=8, n_docs=80):
    rows = [{"query": f"query {q}", "product_id": f"{(q * 11 + k * 3) % n_docs:04d}", "score_linear": 100 - k,
             "title": f"title, {(q * 11 + k * 3) % n_docs}", "image_local": ""}
            for q in range(n_queries) for k in range(per_query)]
    pd.DataFrame(rows).drop_duplicates(["query", "product_id"]).to_csv(path, index=False)
    return path


def test_split_then_check_json(tmp_path, gcl):
    table = write_table(tmp_path / "pairs.csv")
    result = gcl("data", "split", table, "--out", tmp_path / "ds", "--seed", "5")
    assert result.code == 0, result.err
    assert "wrote" in result.output and "zero_shot" in result.output
    for split in SPLITS:
        assert (tmp_path / "ds" / f"{SPLIT_STEMS[split]}.csv").is_file()
    result = gcl("data", "check", tmp_path / "ds", "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert list(summary) == ["splits"] and list(summary["splits"]) == list(SPLITS)
    assert summary["splits"]["novel_corpus"]["corpus"] == "corpus_2"
    assert sum(s["pairs"] for s in summary["splits"].values()) == len(pd.read_csv(table))
    # same seed, same bytes
    assert gcl("data", "split", table, "--out", tmp_path / "again", "--seed", "5").code == 0
    for split in SPLITS:
        name = f"{SPLIT_STEMS[split]}.csv"
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_check_plain_table_and_images_option(tmp_path, gcl):
    root = make_marqo_folder(tmp_path / "ds")
    result = gcl("data", "check", root)
    assert result.code == 0, result.err
    lines = result.output.splitlines()
    assert lines[0].endswith(": ok") and lines[1].split() == ["split", "pairs", "queries", "docs", "corpus",
                                                               "corpus", "size"]
    assert lines[2].split() == ["in_domain", "3", "2", "3", "corpus_1", "3"]
    result = gcl("data", "check", root, "--check-images")
    assert result.code == 2 and len(result.error_lines) == 1 and "00124" in result.err, result.err
    with pytest.raises(DataError, match="00124"):  # what the command turned into that line
        check_dataset_folder(root, check_images=True)
    new = tmp_path / "new"
    new.mkdir()
    result = gcl("data", "check", root, "--images", new, "--check-images")
    assert result.code == 2 and len(result.error_lines) == 1, result.err
    assert str(new / "images" / "00123.png") in result.err
    with pytest.raises(DataError, match=re.escape(str(new / "images" / "00123.png"))):
        check_dataset_folder(root, images_root=new, check_images=True)


def test_help_lists_the_commands(gcl):
    result = gcl("data", "--help")
    assert result.code == 0
    for name in ("split", "check", "synth"):
        assert name in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "check", "{tmp}/nowhere"], "nowhere: no such dataset folder"),
        (["data", "check", "{tmp}"], "not a dataset folder; looked for corpus_1.json (Marqo-GS layout)"),
        (["data", "check", "{tmp}", "--format", "xml"], "Invalid value for '--format'"),
        (["data", "split", "{tmp}/pairs.csv", "--out", "{tmp}/o", "--eval-fraction", "2"],
         "Invalid value for '--eval-fraction'"),
        (["data", "split", "{tmp}/bad.csv", "--out", "{tmp}/o"], "bad.csv: missing column 'doc_id'"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, gcl, args, message):
    write_table(tmp_path / "pairs.csv")
    (tmp_path / "bad.csv").write_text("query,item,score,title\na,1,1,t\n")
    result = gcl([a.format(tmp=tmp_path) for a in args])
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert result.out == ""
    assert not (tmp_path / "o").exists()


def test_split_leaves_nothing_when_the_split_is_impossible(tmp_path, gcl):
    (tmp_path / "two.csv").write_text("query,doc_id,score,title\na,1,1,x\nb,2,1,y\n")
    result = gcl("data", "split", tmp_path / "two.csv", "--out", tmp_path / "o")
    assert result.code == 2 and "is empty" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.csv"]


def test_console_script_exit_codes(tmp_path):
    script = Path(sys.executable).parent / "gcl-eval"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from gcl_eval.cli import main; main()"]
    root = make_marqo_folder(tmp_path / "ds")
    ok = subprocess.run(command + ["data", "check", str(root), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["splits"]["zero_shot"]["pairs"] == 1
    (root / "corpus_1.json").write_text("{broken")
    bad = subprocess.run(command + ["data", "check", str(root)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
    assert "corpus_1.json: unreadable JSON at line 1" in bad.stderr


def test_read_dataset_rejects_unknown_format_and_misplaced_image_root(tmp_path):
    from gcl_eval.data.io import read_dataset
    from gcl_eval.util.errors import GclError

    root = make_marqo_folder(tmp_path / "ds")
    with pytest.raises(GclError, match="unknown dataset format 'csv'; expected one of auto, marqo, hf, beir"):
        read_dataset(root, format="csv")
    with pytest.raises(DataError, match="corpus.jsonl: missing file"):
        read_dataset(root, format="beir")
    with pytest.raises(GclError, match="image folder applies to the Marqo-GS layout only"):
        read_dataset(root, format="hf", images_root=tmp_path)
