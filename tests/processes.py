"""Helpers of the tests that start real processes: the CLI, servers, a fresh clone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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
