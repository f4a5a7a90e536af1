"""`gcl-eval data split` and `gcl-eval data check` through click's runner and the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gcl_eval.cli import cli, main
from gcl_eval.data.dataset import SPLIT_STEMS, SPLITS
from gcl_eval.util.errors import DataError
from test_data_marqo import make_marqo_folder


def write_table(path, n_queries=30, per_query=8, n_docs=80):
    rows = [{"query": f"query {q}", "product_id": f"{(q * 11 + k * 3) % n_docs:04d}", "score_linear": 100 - k,
             "title": f"title, {(q * 11 + k * 3) % n_docs}", "image_local": ""}
            for q in range(n_queries) for k in range(per_query)]
    pd.DataFrame(rows).drop_duplicates(["query", "product_id"]).to_csv(path, index=False)
    return path


def test_split_then_check_json(tmp_path):
    table = write_table(tmp_path / "pairs.csv")
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "split", str(table), "--out", str(tmp_path / "ds"), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "zero_shot" in result.output
    for split in SPLITS:
        assert (tmp_path / "ds" / f"{SPLIT_STEMS[split]}.csv").is_file()
    result = runner.invoke(cli, ["data", "check", str(tmp_path / "ds"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert list(summary) == ["splits"] and list(summary["splits"]) == list(SPLITS)
    assert summary["splits"]["novel_corpus"]["corpus"] == "corpus_2"
    assert sum(s["pairs"] for s in summary["splits"].values()) == len(pd.read_csv(table))
    # same seed, same bytes
    runner.invoke(cli, ["data", "split", str(table), "--out", str(tmp_path / "again"), "--seed", "5"])
    for split in SPLITS:
        name = f"{SPLIT_STEMS[split]}.csv"
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_check_plain_table_and_images_option(tmp_path):
    root = make_marqo_folder(tmp_path / "ds")
    result = CliRunner().invoke(cli, ["data", "check", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(": ok") and lines[1].split() == ["split", "pairs", "queries", "docs", "corpus",
                                                               "corpus", "size"]
    assert lines[2].split() == ["in_domain", "3", "2", "3", "corpus_1", "3"]
    result = CliRunner().invoke(cli, ["data", "check", str(root), "--check-images"])
    assert isinstance(result.exception, DataError) and "00124" in str(result.exception)
    new = tmp_path / "new"
    new.mkdir()
    result = CliRunner().invoke(cli, ["data", "check", str(root), "--images", str(new), "--check-images"])
    assert isinstance(result.exception, DataError) and str(new / "images" / "00123.png") in str(result.exception)


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["data", "--help"])
    assert result.exit_code == 0
    for name in ("split", "check", "synth"):
        assert name in result.output


def run_main(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr()


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
def test_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    write_table(tmp_path / "pairs.csv")
    (tmp_path / "bad.csv").write_text("query,item,score,title\na,1,1,t\n")
    code, captured = run_main([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert not (tmp_path / "o").exists()


def test_split_leaves_nothing_when_the_split_is_impossible(tmp_path, capsys):
    (tmp_path / "two.csv").write_text("query,doc_id,score,title\na,1,1,x\nb,2,1,y\n")
    code, captured = run_main(["data", "split", str(tmp_path / "two.csv"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is empty" in captured.err
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
