"""A local Prefect server (API + UI) on loopback with its SQLite default."""

from __future__ import annotations

import os
import subprocess
import sys


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # The analytics client calls an outside host, which fails here and fills the log with
    # SQLite "database is locked" noise; nothing of ours needs it.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def start_server(host: str = "127.0.0.1", port: int = 4200) -> int:
    """Run `prefect server start` in the foreground; returns its exit code.

    Binds to loopback unless told otherwise: the API has no authentication by default.
    """
    if host == "0.0.0.0":
        print("warning: binding to all interfaces exposes an unauthenticated API", file=sys.stderr)
    print(f"Prefect UI: http://{host}:{port}  (set PREFECT_API_URL=http://{host}:{port}/api in other shells)")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"]
    return subprocess.call(command, env=server_env())
