"""Dataset folders the commands produce: the built-in synthetic worlds (generated once into the cache) and
a ranked pair table split four ways and written in the Marqo-GS layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gcl_eval.util.atomic import file_lock
from gcl_eval.util.errors import GclError
from gcl_eval.util.paths import cache_dir, mark_used


def builtin_dataset(world: str = "default") -> Path:
    """A built-in synthetic world's folder, generated once into the cache folder (keyed by the generator
    version and the world's options)."""
    from gcl_eval.data.synth import SynthConfig
    from gcl_eval.data.synth.build import write_synthetic
    from gcl_eval.data.synth.world import BUILTIN_WORLDS, GENERATOR_VERSION

    if world not in BUILTIN_WORLDS:
        raise GclError(f"unknown built-in world {world!r}; known: {', '.join(BUILTIN_WORLDS)}")
    config = SynthConfig(**BUILTIN_WORLDS[world])
    key = hashlib.sha256(json.dumps({"v": GENERATOR_VERSION, **config.to_dict()}, sort_keys=True).encode()).hexdigest()
    folder = cache_dir("datasets") / f"synth-{world}-{key[:12]}"
    with file_lock(folder, best_effort=True):  # two commands at once: the second waits, then reuses it
        if not (folder / "synth.json").is_file():
            write_synthetic(config, folder, overwrite=True)
        mark_used(folder)
    return folder


def split_pair_table(table: Path, out: Path, *, seed: int = 0, eval_fraction: float = 0.2,
                     corpus_2_fraction: float = 0.5, overwrite: bool = False) -> dict:
    """Split a ranked pair table (CSV or parquet) four ways, check it and write it to ``out``; the
    per-split summary of gcl_eval.data.check."""
    from gcl_eval.data.check import check_dataset
    from gcl_eval.data.marqo import write_marqo
    from gcl_eval.data.split import build_quadruple_split, read_pair_table

    pairs, documents = read_pair_table(table)
    dataset = build_quadruple_split(pairs, documents, seed=seed, eval_query_fraction=eval_fraction,
                                    corpus_2_fraction=corpus_2_fraction, name=Path(out).name)
    summary = check_dataset(dataset)
    write_marqo(dataset, Path(out), overwrite=overwrite)
    return summary


def check_dataset_folder(path: str | Path, *, format: str = "auto", images_root: Path | None = None,
                         check_images: bool = False, mirror: str | None = None) -> dict:
    """Read a dataset folder (or a registered dataset, fetched when the cache lacks it) and check its
    quadruple structure; the per-split summary."""
    from gcl_eval.data.check import check_dataset
    from gcl_eval.data.io import read_dataset
    from gcl_eval.data.resolve import resolve_dataset

    folder = resolve_dataset(path, images=check_images, mirror=mirror)
    return check_dataset(read_dataset(folder, format=format, images_root=images_root), check_images=check_images)
