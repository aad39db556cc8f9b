"""A real HTTP server on 127.0.0.1 for download tests: the production download code runs unchanged against it.

It serves bytes registered per path, honours ``Range: bytes=N-`` (resume), can drop the connection once
mid-file, and answers ``/<repo>/resolve/<revision>/<file>`` with the headers a Hugging Face Hub endpoint
sends (X-Repo-Commit, ETag), so huggingface_hub talks to it as to the Hub (``HF_ENDPOINT``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, int] = {}  # path -> bytes sent before the connection is cut (once)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?")[0]
                server.requests.append((self.command, path, self.headers.get("Range")))
                data = server.files.get(path)
                hub = "/resolve/" in path
                if data is None:
                    self.send_response(404)
                    if hub:
                        self.send_header("X-Repo-Commit", HUB_COMMIT)
                        self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if (match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")) is not None:
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if hub:
                    self.send_header("X-Repo-Commit", HUB_COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.end_headers()
                if not body:
                    return
                cut = server.drop_once.pop(path, None) if self.command == "GET" else None
                if cut is not None:
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(data[start:])

        return Handler
