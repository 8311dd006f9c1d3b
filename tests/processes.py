"""Helpers of the tests that start real processes: the CLI, servers, a fresh clone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATAWORTH = Path(sys.executable).with_name("dataworth")


def wait_for(probe, timeout: float, what: str, log: Path):
    """Call `probe` until it returns something truthy; Prefect's ObjectNotFound counts as not yet."""
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := probe():
                return found
        except ObjectNotFound:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; its log ends:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


def stop(process: subprocess.Popen) -> None:
    """End the process and its children (the flow runs it started): its whole session."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # nothing of it is left
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@contextmanager
def dataworth_server(home: Path) -> Iterator[RunningServer]:
    """`dataworth server` on a random port (not Prefect's 4200, which the UI must not be assumed to
    use) with a PREFECT_HOME of its own under `home`, healthy; stopped with its children after."""
    from flows.server import is_healthy

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home / "prefect")
    log = home / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(DATAWORTH), "server", "--port", str(port)], cwd=home, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = RunningServer(process, port, log)
    try:
        wait_for(lambda: process.poll() is not None or is_healthy(server.api), 300,
                 f"the Prefect server on port {port}", log)
        assert process.poll() is None, f"the server exited:\n{tail(log)}"
        yield server
    finally:
        stop(process)
