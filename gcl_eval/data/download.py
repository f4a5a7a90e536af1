"""Resumable, verified HTTP downloads into a folder.

`download(remote, folder)` leaves `folder/<name>` only once the whole file is there and checked
(the recorded size, else the server's Content-Length; the recorded sha256 when there is one), with
its sha256 beside it in `<name>.sha256` (sha256sum format). Until then the bytes live in
`<name>.part`: a dropped transfer is resumed with an HTTP Range request, within the call (a few
retries with back-off) and by a later call, which continues the partial file. A file already
downloaded is reused without any request. A host that cannot be reached fails fast (a refused
connection at once, a silent host within CONNECT_DEADLINE), with one line naming the URL.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from gcl_eval.data.registry import RemoteFile
from gcl_eval.data.transfer_progress import TransferProgress
from gcl_eval.util.atomic import atomic_write_text, file_lock
from gcl_eval.util.errors import GclError

CHUNK = 1 << 20
CONNECT_TIMEOUT = 5.0  # seconds to open a connection: a closed port or a dead host fails fast
CONNECT_DEADLINE = 12.0  # seconds to find an address of the host that answers, however many it has
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as dropped
RETRIES = 4  # resumes within one call after a dropped transfer or a 5xx answer
BACKOFF = 0.25  # seconds before the first retry, doubled for each next one
MIRROR_HINT = "pass --mirror URL (or set GCL_EVAL_MIRROR) to fetch from a mirror"


@dataclass(frozen=True)
class Downloaded:
    """A complete, verified file."""

    path: Path
    url: str
    size: int
    sha256: str


class _Dropped(Exception):
    """A transfer that stopped early or a transient server error: worth resuming."""


def download(remote: RemoteFile, folder: Path, *, retries: int = RETRIES) -> Downloaded:
    """`folder/<remote.name>`, fetched from remote.url unless it is already there (then no request)."""
    dest = Path(folder) / remote.name
    with file_lock(dest):
        done = _existing(remote, dest)
        if done is not None:
            return done
        transfer = _Transfer(remote, dest)
        _check_reachable(remote.url)
        with requests.Session() as session:
            transfer.run(session, retries)
        return transfer.finish()


def _check_reachable(url: str) -> None:
    """Fail within CONNECT_DEADLINE when no address of the host accepts a connection.

    An HTTP client tries a host's addresses one by one, each with the full connect timeout, and a
    storage host may have eight: this bounds the wait on a network that drops packets. Behind a
    proxy the proxy connects, so nothing is checked here.
    """
    parts = urlsplit(url)
    if requests.utils.get_environ_proxies(url):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + CONNECT_DEADLINE
    try:
        addresses = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise GclError(f"cannot reach {url} ({getattr(err, 'strerror', None) or err}); check the network, or "
                       f"{MIRROR_HINT}") from None
    reason = f"no answer within {CONNECT_DEADLINE:g} s"
    for family, kind, proto, _, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(min(CONNECT_TIMEOUT, left))
                sock.connect(address)
                return
        except OSError as err:
            reason = err.strerror or (f"no answer within {CONNECT_TIMEOUT:g} s" if isinstance(err, TimeoutError)
                                      else type(err).__name__)
    raise GclError(f"cannot reach {url} ({reason}); check the network, or {MIRROR_HINT}")


def _existing(remote: RemoteFile, dest: Path) -> Downloaded | None:
    """The finished file when it is there and matches what is recorded; a mismatching one is removed."""
    digest_file = _digest_path(dest)
    if not dest.is_file() or not digest_file.is_file():
        return None
    digest = digest_file.read_text(encoding="utf-8").split(" ", 1)[0]
    size = dest.stat().st_size
    if (remote.size and size != remote.size) or (remote.sha256 and digest != remote.sha256):
        dest.unlink()
        digest_file.unlink()
        return None
    return Downloaded(dest, remote.url, size, digest)


def _digest_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


class _Transfer:
    """The state of one file's download: the partial file, its total size and the running hash."""

    def __init__(self, remote: RemoteFile, dest: Path):
        self.remote, self.dest = remote, dest
        self.part = dest.with_name(dest.name + ".part")
        self.state_file = dest.with_name(dest.name + ".part.json")
        state = _load_state(self.state_file, remote.url)
        self.total: int | None = state.get("total")
        self.validator: str | None = state.get("validator")
        self.hasher, self.hashed = hashlib.sha256(), 0
        self.answered = False  # whether the server has answered once in this call
        self.progress: TransferProgress | None = None

    def run(self, session: requests.Session, retries: int) -> None:
        """Fetch until the partial file is whole; resume up to `retries` times after a drop."""
        failures = 0
        try:
            while True:
                try:
                    self._attempt(session)
                    return
                except _Dropped as err:
                    failures += 1
                    have = _size(self.part)
                    if failures > retries:
                        raise GclError(f"{self.remote.url}: {err} ({failures} tries); {have} bytes are kept in "
                                       f"{self.part}: run the same command again to resume") from None
                    wait = BACKOFF * 2 ** (failures - 1)
                    self._note(f"{self.remote.name}: {err}; resuming from byte {have} in {wait:g} s "
                               f"(retry {failures} of {retries})")
                    time.sleep(wait)
        finally:
            if self.progress is not None:
                self.progress.close()

    def _attempt(self, session: requests.Session) -> None:
        offset = _size(self.part)
        if self.total is not None and offset == self.total:
            return  # a previous call got every byte but stopped before the checks
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            response = session.get(self.remote.url, headers=headers, stream=True,
                                   timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.RequestException as err:
            if not self.answered:
                raise GclError(f"cannot reach {self.remote.url} ({_reason(err)}); check the network, or "
                               f"{MIRROR_HINT}") from None
            raise _Dropped(f"connection failed ({_reason(err)})") from None
        with response:
            self.answered = True
            start = self._accept(response, offset)
            self._receive(response, start)

    def _accept(self, response: requests.Response, offset: int) -> int:
        """Check the answer; returns the byte offset its body starts at (0 = the whole file)."""
        status = response.status_code
        if status == 416:  # the partial file is not a prefix of what the server has now: start over
            self._restart()
            raise _Dropped("the server refused to resume (HTTP 416); starting over")
        if status >= 500 or status == 429:
            raise _Dropped(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise GclError(f"{self.remote.url}: HTTP {status} {response.reason}; check the URL, or {MIRROR_HINT}")
        start, total = _body_range(response, offset)
        if start == 0:  # the whole file (no range support, or it changed since the partial file began)
            self.total, self.validator = total, _validator(response)
        elif start != offset or (self.total is not None and total not in (None, self.total)):
            self._restart()  # another range than asked for, or another file size: take it whole
            raise _Dropped("the file changed on the server; starting over")
        else:
            self.total = total if total is not None else self.total
            self.validator = _validator(response) or self.validator
        self._check_expected_size()
        self._check_free_space(start)
        atomic_write_text(self.state_file, json.dumps({"url": self.remote.url, "total": self.total,
                                                       "validator": self.validator}))
        return start

    def _receive(self, response: requests.Response, start: int) -> None:
        if start == 0:
            self.hasher, self.hashed = hashlib.sha256(), 0
        elif self.hashed != start:
            self._hash_existing(start)
        if self.progress is None:
            self.progress = TransferProgress(self.remote.name, self.remote.url, self.total)
        self.progress.start(start)
        try:
            with open(self.part, "r+b" if start else "wb") as handle:
                handle.seek(start)
                handle.truncate()
                for chunk in response.raw.stream(CHUNK, decode_content=False):  # keeps the bytes of a cut read
                    handle.write(chunk)
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
                    self.progress.advance(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            raise _Dropped(f"transfer dropped at byte {self.hashed} ({_reason(err)})") from None
        except OSError as err:
            raise _write_error(err, self.part) from None
        if self.total is not None and self.hashed < self.total:
            raise _Dropped(f"transfer ended at byte {self.hashed} of {self.total}")

    def _hash_existing(self, upto: int) -> None:
        self.hasher, self.hashed = hashlib.sha256(), 0
        with open(self.part, "rb") as handle:
            while self.hashed < upto:
                block = handle.read(min(CHUNK * 8, upto - self.hashed))
                if not block:
                    break
                self.hasher.update(block)
                self.hashed += len(block)

    def _restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.total, self.validator = None, None
        self.hasher, self.hashed = hashlib.sha256(), 0

    def _check_expected_size(self) -> None:
        expected = self.remote.size
        if expected and self.total is not None and self.total != expected:
            self._discard()
            raise GclError(f"{self.remote.url}: size mismatch: the server offers {self.total} bytes, the registry "
                           f"records {expected}; nothing was kept")

    def _check_free_space(self, start: int) -> None:
        if self.total is None:
            return
        self.part.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.part.parent).free
        need = self.total - start
        if need > free:
            raise GclError(f"not enough disk space for {self.remote.name}: {need} more bytes needed, {free} free "
                           f"in {self.part.parent} (set GCL_EVAL_CACHE to a larger disk)")

    def finish(self) -> Downloaded:
        """Check the whole partial file and move it into place; a bad one is removed."""
        size = _size(self.part)
        if self.hashed != size:
            self._hash_existing(size)
        expected = self.remote.size or self.total
        digest = self.hasher.hexdigest()
        if expected is not None and size != expected:
            self._discard()
            raise GclError(f"{self.remote.url}: size mismatch: got {size} bytes, expected {expected}; "
                           "the file was removed")
        if self.remote.sha256 and digest != self.remote.sha256:
            self._discard()
            raise GclError(f"{self.remote.url}: sha256 mismatch: got {digest}, expected {self.remote.sha256}; "
                           "the file was removed")
        atomic_write_text(_digest_path(self.dest), f"{digest}  {self.dest.name}\n")
        os.replace(self.part, self.dest)
        self.state_file.unlink(missing_ok=True)
        return Downloaded(self.dest, self.remote.url, size, digest)

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    def _note(self, message: str) -> None:
        if self.progress is not None:
            self.progress.note(message)


def _load_state(path: Path, url: str) -> dict:
    """What an earlier call learnt about the partial file (total size, validator); {} if nothing usable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("url") != url:
        return {}  # another source: its validator means nothing here, the size check still applies
    return state


def _body_range(response: requests.Response, offset: int) -> tuple[int, int | None]:
    """(first byte of the body, total file size or None) from a 200 or 206 answer."""
    length = response.headers.get("Content-Length")
    if response.status_code != 206:
        return 0, int(length) if length and length.isdigit() else None
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    if not match:
        return -1, None  # a range we cannot place: start over
    total = match.group(3)
    return int(match.group(1)), int(total) if total != "*" else None


def _validator(response: requests.Response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range needs so a changed file is sent whole."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _reason(err: BaseException) -> str:
    """A short reason for a network error ('Connection refused', 'no answer within 5 s')."""
    if isinstance(err, requests.ConnectTimeout):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(err, requests.ReadTimeout):
        return f"no data for {READ_TIMEOUT:g} s"
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] ([^'\"\)\]]+)", text)
    if match:
        return match.group(1).strip()
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection closed early"
    return type(err).__name__


def _write_error(err: OSError, path: Path) -> GclError:
    """One line for a failed write: a full disk keeps the partial file for a later resume."""
    if err.errno == errno.ENOSPC:
        return GclError(f"no space left on device while writing {path}; free some space (the partial file is "
                        "kept) and run the same command again")
    return GclError(f"cannot write {path}: {err.strerror or err}")
