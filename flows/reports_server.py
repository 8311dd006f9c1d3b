"""The workspace's reports over HTTP on loopback, so the report links in the Prefect UI open.

Browsers do not follow file:// links from a web page, so an artifact linking the HTML report as
a file is dead in the UI. `dataworth serve` serves the reports directory read-only beside the
deployments and tells the flow runs it starts where (DATAWORTH_REPORTS_URL), and their link
artifacts point there.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .server import ui_url

DEFAULT_PORT = 4201  # beside the Prefect UI's 4200


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would drown the flow runs' output in the serve log


def serve_reports(directory: Path, host: str = "127.0.0.1",
                  port: int = DEFAULT_PORT) -> tuple[str, ThreadingHTTPServer]:
    """Serve `directory` in a daemon thread; returns its base URL and the server (to shut down)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        server = ThreadingHTTPServer((host, port), partial(_QuietHandler, directory=str(directory)))
    except OSError as err:
        raise ValueError(f"cannot serve the reports on {host}:{port} ({err.strerror}): pick another "
                         "--reports-port, or 0 to serve none") from err
    threading.Thread(target=server.serve_forever, name="dataworth-reports", daemon=True).start()
    return ui_url(host, server.server_address[1]), server
