"""The datasets `gcl-eval data get` knows: one TOML file per dataset in gcl_eval/data/registry/.

An entry names the subset folder to take from the text archive (`<folder>/<subset>/` inside it),
the archives by their official URLs, and their size and sha256 where they are recorded (0 and ""
mean "not recorded": the download is then checked against the server's Content-Length).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from gcl_eval.util.errors import GclError

REGISTRY_DIR = Path(__file__).parent / "registry"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: where from, and what it must be (when recorded)."""

    url: str
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        """The file name: the last part of the URL's path (also its name on a mirror and in the cache)."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    def on_mirror(self, mirror: str | None) -> "RemoteFile":
        """The same file fetched from `mirror` + its name (unchanged without a mirror)."""
        if not mirror:
            return self
        return replace(self, url=mirror.rstrip("/") + "/" + self.name)


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of the registry: a subset of the text archive plus, optionally, an image archive."""

    name: str
    description: str
    subset: str
    text: RemoteFile
    text_folder: str
    images: RemoteFile | None = None
    hf_dataset: str | None = None

    @property
    def member_prefix(self) -> str:
        """The folder inside the text archive that holds this dataset's files."""
        return f"{self.text_folder}/{self.subset}" if self.text_folder else self.subset


def dataset_names() -> list[str]:
    return sorted(p.stem for p in REGISTRY_DIR.glob("*.toml"))


def entries() -> list[DatasetEntry]:
    """Every registered dataset, by name."""
    return [get_entry(name) for name in dataset_names()]


def get_entry(name: str) -> DatasetEntry:
    """The registry entry called `name`; GclError naming the known ones otherwise."""
    path = REGISTRY_DIR / f"{name}.toml"
    if "/" in name or not path.is_file():
        raise GclError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} (see gcl-eval data list)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise GclError(f"{path}: not valid TOML: {err}") from None
    return _entry(name, data, path)


def _entry(name: str, data: dict, path: Path) -> DatasetEntry:
    subset = _text(data, "subset", path)
    text = data.get("text")
    if not isinstance(text, dict):
        raise GclError(f"{path}: missing [text] table (the archive holding the subset's files)")
    images = data.get("images")
    if images is not None and not isinstance(images, dict):
        raise GclError(f"{path}: [images] must be a table with url, size and sha256")
    hf = data.get("hf_dataset")
    return DatasetEntry(
        name=name, description=str(data.get("description", "")), subset=subset,
        text=_remote(text, path, "text"), text_folder=str(text.get("folder", "")).strip("/"),
        images=_remote(images, path, "images") if images else None,
        hf_dataset=str(hf) if hf else None,
    )


def _remote(table: dict, path: Path, where: str) -> RemoteFile:
    url = _text(table, "url", path, where)
    if urlsplit(url).scheme not in ("http", "https") or not RemoteFile(url).name:
        raise GclError(f"{path}: [{where}] url {url!r}: expected an http(s) URL of a file")
    size = table.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise GclError(f"{path}: [{where}] size {size!r}: expected a number of bytes (0 = not recorded)")
    sha = str(table.get("sha256", "")).lower()
    if sha and not _SHA256.fullmatch(sha):
        raise GclError(f"{path}: [{where}] sha256 {sha!r}: expected 64 hex digits (\"\" = not recorded)")
    return RemoteFile(url=url, size=size or None, sha256=sha or None)


def _text(table: dict, key: str, path: Path, where: str = "") -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        place = f"[{where}] " if where else ""
        raise GclError(f"{path}: {place}missing {key!r} (a non-empty string)")
    return value
