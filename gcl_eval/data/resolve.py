"""What a dataset argument names: a dataset folder, or a registered dataset fetched into the cache once.

Every command that takes a dataset (`run`, `train`, `eval`, `suite`, `data check`) resolves it here.
An existing folder wins; else a name of the registry (`gcl-eval data list`) is the cached copy,
fetched first when the cache does not hold it (with a line on stderr saying so, then the download's
progress). Anything else is a one-line error naming the registered datasets.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcl_eval.util.errors import DataError
from gcl_eval.util.paths import mark_used


def resolve_dataset(name_or_path: str | Path, *, images: bool = True, mirror: str | None = None,
                    fetch: bool = True) -> Path:
    """The dataset folder `name_or_path` stands for.

    A registry name is fetched unless the cache holds it (with its images when `images`; a copy
    with images also serves a text-only use); `mirror` is data get's --mirror (default
    $GCL_EVAL_MIRROR). `fetch=False` returns where the copy is or will be, downloading nothing.
    """
    from gcl_eval.data.get import cached_folder, get_dataset, is_complete
    from gcl_eval.data.registry import dataset_names, get_entry

    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    names = dataset_names()
    if text not in names:
        raise DataError(f"{path}: no such dataset folder, nor a registered dataset "
                        f"(registered: {', '.join(names)}; see gcl-eval data list)")
    folder = cached_folder(text)
    if not fetch:
        return folder
    if is_complete(folder, get_entry(text), images):
        mark_used(folder)  # its last use, for `gcl-eval cache prune`
        return folder
    what = "with its images" if images else "text only"
    click.echo(f"dataset {text} is not in the cache: fetching it ({what}) into {folder}, "
               f"as `gcl-eval data get {text}{'' if images else ' --no-images'}` would", err=True)
    return get_dataset(text, images=images, mirror=mirror)
