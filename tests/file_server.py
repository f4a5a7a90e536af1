"""A local HTTP file server for download tests: 127.0.0.1, a free port, Range requests, faults on demand.

It serves in-memory files by name, answers `Range: bytes=N-` with 206 (and 416 past the end), can cut
the next transfers of a file half-way (the headers promise the whole body) or answer a fixed status,
and records every request (path, Range header). Connections time out after a few seconds, so a test
never hangs on it; `stop()` shuts it down and joins its thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOCKET_TIMEOUT = 5.0


class FileServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drops: dict[str, int] = {}  # file name -> how many more transfers to cut half-way
        self.statuses: dict[str, int] = {}  # file name -> status to answer instead of the file
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=SOCKET_TIMEOUT)

    def requests_for(self, name: str) -> list[str | None]:
        """The Range header of each request for `name`, in order (None = the whole file)."""
        with self._lock:
            return [rng for path, rng in self.requests if path == "/" + name]

    def _record(self, path: str, rng: str | None) -> None:
        with self._lock:
            self.requests.append((path, rng))

    def _take_drop(self, name: str) -> bool:
        with self._lock:
            if self.drops.get(name, 0) > 0:
                self.drops[name] -= 1
                return True
            return False


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT

        def do_GET(self):  # noqa: N802 (http.server's naming)
            rng = self.headers.get("Range")
            server._record(self.path, rng)
            name = self.path.lstrip("/")
            if name in server.statuses:
                return self._answer(server.statuses[name])
            if name not in server.files:
                return self._answer(404)
            data = server.files[name]
            start = 0
            if rng:
                match = re.fullmatch(r"bytes=(\d+)-", rng)
                start = int(match.group(1)) if match else 0
                if start >= len(data):
                    return self._answer(416, {"Content-Range": f"bytes */{len(data)}"})
            self._send_body(name, data, start, partial=bool(rng))

        def _send_body(self, name: str, data: bytes, start: int, partial: bool) -> None:
            body = data[start:]
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if server._take_drop(name):
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _answer(self, status: int, headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler
