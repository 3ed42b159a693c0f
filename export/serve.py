"""`make serve`: RUN/app/ on a plain static HTTP server (Python's http.server), 127.0.0.1 unless
HOST= says otherwise.

Browsers give the camera only to a secure page: http://localhost, http://127.0.0.1 or HTTPS.
HOST=0.0.0.0 opens the page to your network (a phone can load it and classify a dropped image),
but the phone's camera then needs HTTPS (README, "Web app").
"""
from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8000


class AppRequestHandler(SimpleHTTPRequestHandler):
    """Static files with the types the page needs (application/wasm lets the browser compile
    while downloading) and no caching, so a rebuilt app is what the next reload shows."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json",
                      ".tflite": "application/octet-stream", ".rgb": "application/octet-stream"}

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def make_server(folder: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                verbose: bool = False) -> ThreadingHTTPServer:
    """A server (not yet serving) for ``folder``; port 0 picks a free one (``server.server_address``)."""
    folder = Path(folder)
    if not (folder / "index.html").exists():
        raise UserError(f"{folder}: no index.html; build the page first with `make app RUN={folder.parent}`")
    handler = functools.partial(AppRequestHandler, directory=str(folder))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port} ({e.strerror}); choose another PORT=") from None
    server.daemon_threads = True
    server.verbose = verbose
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}/"


def serve_lines(folder: Path, server: ThreadingHTTPServer, host: str) -> list[str]:
    """What `make serve` prints before it starts serving."""
    lines = [f"Serving {folder} on {url_of(server)} (Ctrl-C stops)",
             f"  self-test: {url_of(server)}?selftest=1"]
    if host not in LOCAL_HOSTS:
        port = server.server_address[1]
        lines += [f"  HOST={host}: every device on your network can load it: http://<this computer's address>:{port}/",
                  "  a phone's camera needs HTTPS there (README, \"Web app\"); dropping an image works over plain HTTP"]
    return lines


def serve(folder: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, log=print) -> None:
    """Serve ``folder`` until Ctrl-C (or SIGTERM, which the command line turns into Ctrl-C)."""
    server = make_server(folder, host, port, verbose=True)
    for line in serve_lines(folder, server, host):
        log(line)
    try:
        server.serve_forever()
    finally:
        server.server_close()
