"""Reading a dataset folder in any supported layout."""

from __future__ import annotations

from pathlib import Path

from gcl_eval.data.dataset import Dataset
from gcl_eval.util.errors import DataError, GclError

FORMATS = ("auto", "marqo", "hf", "beir")


def detect_format(path: Path) -> str:
    """marqo (corpus_1.json), hf (split parquet files) or beir (corpus.jsonl); DataError otherwise."""
    from gcl_eval.data.hf import find_hf_files

    if not path.exists():
        raise DataError(f"{path}: no such dataset folder")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a dataset folder (for a pair table use `gcl-eval data split`)")
    if (path / "corpus_1.json").is_file():
        return "marqo"
    if find_hf_files(path):
        return "hf"
    if (path / "corpus.jsonl").is_file():
        return "beir"
    raise DataError(
        f"{path}: not a dataset folder; looked for corpus_1.json (Marqo-GS layout), "
        "<split>.parquet, <split>-*.parquet, data/<split>-*.parquet or default/<split>/*.parquet "
        "(Hugging Face layout) "
        "and corpus.jsonl (BEIR layout)"
    )


def read_dataset(path: str | Path, *, format: str = "auto", images_root: str | Path | None = None) -> Dataset:
    """Read a dataset folder; `format` is auto (detected from the files), marqo, hf or beir.

    `images_root` re-roots image paths and applies to the Marqo-GS layout only (the HF layout keeps
    image bytes inside its parquet files; BEIR has no images).
    """
    if format not in FORMATS:
        raise GclError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    kind = detect_format(path) if format == "auto" else format
    if images_root is not None and kind != "marqo":
        raise GclError(f"an image folder applies to the Marqo-GS layout only; {path} is in the {kind} layout")
    if kind == "marqo":
        from gcl_eval.data.marqo import read_marqo

        return read_marqo(path, images_root=images_root)
    if kind == "hf":
        from gcl_eval.data.hf import read_hf

        return read_hf(path)
    from gcl_eval.data.beir import read_beir

    return read_beir(path)
