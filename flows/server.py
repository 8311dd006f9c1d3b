"""A local Prefect server (API + UI) on loopback with its SQLite default."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # The analytics client calls an outside host, which fails here and fills the log with
    # SQLite "database is locked" noise; nothing of ours needs it.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def start_server(host: str = "127.0.0.1", port: int = 4200) -> NoReturn:
    """Become `prefect server start` (never returns).

    Binds to loopback unless told otherwise: the API has no authentication by default. The
    process is replaced rather than forked, so a service manager's SIGTERM reaches the server
    itself instead of leaving it running orphaned.
    """
    if host not in LOOPBACK:
        print(f"warning: binding to {host} exposes an unauthenticated API beyond this machine", file=sys.stderr)
    print(f"Prefect UI: http://{host}:{port}  (set PREFECT_API_URL=http://{host}:{port}/api in other shells)",
          flush=True)
    command = [sys.executable, "-m", "prefect", "server", "start",
               "--host", host, "--port", str(port), "--analytics-off"]
    os.execve(sys.executable, command, server_env())
