#!/usr/bin/env python3
"""Serve a folder of Hugging Face model repos as a Hub endpoint for ``HF_ENDPOINT`` (huggingface_hub 2.x).

    python scripts/hub_mirror.py MIRROR --port 8000        # MIRROR/timm/<model>/model.safetensors, config.json
    HF_ENDPOINT=http://127.0.0.1:8000 flowerkit train ... --pretrained hf-hub:timm/<model>

A plain static server (``python -m http.server``) is not enough: ``hf_hub_download`` first sends
``HEAD {endpoint}/{repo}/resolve/{revision}/{file}`` and refuses an answer without ``X-Repo-Commit`` (the
40-hex commit the file belongs to) and ``ETag`` (or ``X-Linked-Etag``); it reads the size from
``Content-Length`` (or ``X-Linked-Size``), then GETs the same URL (``Range: bytes=N-`` to resume). A file the
repo does not have must be a 404 with ``X-Error-Code: EntryNotFound`` (flowerkit then tries the next file
name), an unknown repo ``RepoNotFound``, an unknown revision ``RevisionNotFound``. This server does exactly
that, with the standard library only: each folder MIRROR/ORG/NAME is one repo at revision ``main`` (and at the
commit it reports, derived from the files' contents, so changed files are a new commit to the Hub cache).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
CHUNK = 1 << 20


@lru_cache(maxsize=256)
def file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    """The file's sha256, the Hub's ETag of an LFS file (cached per path, modification time and size)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    stat = path.stat()
    return file_sha256(path, stat.st_mtime_ns, stat.st_size)


def repo_commit(repo_dir: Path) -> str:
    """A 40-hex commit id for the repo folder's current contents (names and sha256 of its files)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in repo_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(repo_dir)}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def make_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class HubHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            match = RESOLVE.match(self.path.split("?")[0])
            repo_dir = (root / match["repo"]).resolve() if match else None
            if match is None or repo_dir is None or not repo_dir.is_relative_to(root) or not repo_dir.is_dir():
                return self._error("RepoNotFound")
            commit = repo_commit(repo_dir)
            if match["revision"] not in ("main", commit):
                return self._error("RevisionNotFound", commit)
            path = (repo_dir / match["file"]).resolve()
            if not path.is_relative_to(repo_dir) or not path.is_file():
                return self._error("EntryNotFound", commit)
            self._send_file(path, commit, body)

        def _send_file(self, path: Path, commit: str, body: bool) -> None:
            size = path.stat().st_size
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if ranged and int(ranged[1]) < size:
                start = int(ranged[1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{sha256_of(path)}"')
            self.end_headers()
            if body:
                with path.open("rb") as fh:
                    fh.seek(start)
                    while chunk := fh.read(CHUNK):
                        self.wfile.write(chunk)

        def _error(self, code: str, commit: str | None = None) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return HubHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="Folder holding ORG/NAME/<files> per model repo.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bind", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(root))
    print(f"Hub mirror of {root} at http://{args.bind}:{server.server_address[1]} (HF_ENDPOINT)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
