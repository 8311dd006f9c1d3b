"""A local Prefect server (API + UI) on loopback with its SQLite default.

In the foreground (`dataworth server`) the process becomes the server, for a service manager; in
the background (`dataworth server --background`, what the quickstart uses) it is started detached,
or reused when one already answers on that address, and waited for until it is healthy.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import psutil

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
DEFAULT_PORT = 4200
# The first start on a fresh PREFECT_HOME creates and migrates its database: 10-20 s on an idle
# 2-core machine, minutes on a loaded one (up to 3.5 min measured); wait well beyond that.
START_TIMEOUT_S = 900.0
# Prefect's own name for a background server's pid, so `prefect server stop` stops ours too.
PID_FILE = "server.pid"
LOG_FILE = "dataworth-server.log"


class ServerError(RuntimeError):
    """The server could not be started, reached or stopped; the message says what to do."""


def _url_host(host: str) -> str:
    """The host as a browser on this machine reaches it: a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def ui_url(host: str, port: int) -> str:
    return f"http://{_url_host(host)}:{port}"


def api_url(host: str, port: int) -> str:
    return f"{ui_url(host, port)}/api"


def server_env(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> dict[str, str]:
    env = dict(os.environ)
    # The analytics client calls an outside host, which fails here and fills the log with
    # SQLite "database is locked" noise; nothing of ours needs it.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    # The UI asks /ui-settings where its API is. Prefect answers PREFECT_UI_API_URL, else
    # PREFECT_API_URL (which in this shell may name another server), else host and port from the
    # settings above - never from the --port flag. Say it outright; a proxy's own URL set by the
    # operator wins.
    env.setdefault("PREFECT_UI_API_URL", api_url(host, port))
    env["PREFECT_API_URL"] = api_url(host, port)
    return env


def _command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start",
            "--host", host, "--port", str(port), "--analytics-off"]


def _warn_if_exposed(host: str) -> None:
    if host not in LOOPBACK:
        print(f"warning: binding to {host} exposes an unauthenticated API beyond this machine", file=sys.stderr)


def start_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> NoReturn:
    """Become `prefect server start` (never returns).

    Binds to loopback unless told otherwise: the API has no authentication by default. The
    process is replaced rather than forked, so a service manager's SIGTERM reaches the server
    itself instead of leaving it running orphaned.
    """
    _warn_if_exposed(host)
    print(f"Prefect UI: {ui_url(host, port)}  (set PREFECT_API_URL={api_url(host, port)} in other shells)",
          flush=True)
    os.execve(sys.executable, _command(host, port), server_env(host, port))


def is_healthy(url: str) -> bool:
    """Whether a Prefect API answers its health check at `url` (ending in /api)."""
    try:
        return httpx.get(f"{url}/health", timeout=5).json() is True
    except (httpx.HTTPError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def prefect_home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()).expanduser()


def _read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs a Prefect server (not a recycled pid)."""
    try:
        pid = int(pid_file.read_text().strip())
        process = psutil.Process(pid)
        running = process.status() != psutil.STATUS_ZOMBIE and any("prefect" in part for part in process.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if running else None


@dataclass(frozen=True)
class RunningServer:
    api_url: str
    ui_url: str
    pid: int | None  # None: an existing server was reused
    log: Path | None


def _wait_healthy(url: str, process: subprocess.Popen | None, log: Path | None, timeout: float,
                  say: Callable[[str], None]) -> None:
    start = time.monotonic()
    next_note = start + 30
    while not is_healthy(url):
        waited = time.monotonic() - start
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:] if log else []
            raise ServerError(f"the Prefect server exited with code {process.returncode} before it was healthy; "
                              f"its log ({log}) ends:\n" + "\n".join(tail))
        if waited > timeout:
            raise ServerError(f"the Prefect server at {url} was not healthy after {timeout:.0f} s; it may still be "
                              f"starting (log: {log}): run the same command again to keep waiting, or "
                              "`dataworth server --stop` to give up")
        if time.monotonic() >= next_note:
            say(f"  still waiting for the Prefect server ({waited:.0f} s; log: {log})")
            next_note += 30
        time.sleep(1)


def ensure_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float = START_TIMEOUT_S,
                  say: Callable[[str], None] = print) -> RunningServer:
    """A healthy Prefect server on host:port: the one already answering there, or a new one started
    in the background (detached, logging under PREFECT_HOME) and waited for."""
    url = api_url(host, port)
    if is_healthy(url):
        return RunningServer(url, ui_url(host, port), None, None)
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    pid_file, log = home / PID_FILE, home / LOG_FILE
    pid = _read_pid(pid_file)
    process = None
    if pid is None:
        if _port_in_use(host, port):
            raise ServerError(f"port {port} on {host} is taken by something that is not a healthy Prefect server; "
                              "pick another port (--port, or DATAWORTH_PORT for the quickstart)")
        _warn_if_exposed(host)
        with log.open("ab") as out:
            process = subprocess.Popen(_command(host, port), env=server_env(host, port), stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(str(process.pid))
        pid = process.pid
        say(f"starting a Prefect server at {ui_url(host, port)} in the background (pid {pid}, log {log});")
        say("  the first start creates its database and can take a few minutes on a busy machine")
    else:
        say(f"waiting for the Prefect server already starting in the background (pid {pid}, log {log})")
    _wait_healthy(url, process, log, timeout, say)
    return RunningServer(url, ui_url(host, port), pid, log)


def _signal(pid: int, sig: int) -> None:
    """Signal the server's whole session (it and anything it started) when it leads one, as the
    servers started here do; otherwise (`prefect server start --background`) the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:  # it ended meanwhile
        pass


def stop_server(timeout: float = 30.0) -> str:
    """Stop the background server started from this PREFECT_HOME; returns what happened, in words."""
    pid_file = prefect_home() / PID_FILE
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"no background Prefect server runs from {pid_file.parent}"
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _read_pid(pid_file) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _read_pid(pid_file) is not None:
        _signal(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return f"stopped the Prefect server (pid {pid})"
