"""The README's first command, as a new user meets it: a fresh clone, a home that never ran Prefect.

The clone is of the checkout's committed HEAD (uncommitted edits are not in it). It reuses this
test's environment through DATAWORTH_VENV instead of installing again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .processes import REPO, free_port

pytestmark = pytest.mark.slow
OUTPUT = Path(__file__).parent / "output"


def fresh_env(clone: Path, home: Path, port: int) -> dict[str, str]:
    # Nothing of this session's Prefect (its home, its test server) may leak into the new user's run.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return env | {"HOME": str(home), "DATAWORTH_VENV": sys.prefix, "DATAWORTH_PORT": str(port),
                  "PYTHONPATH": str(clone)}  # the clone's code, also for the commands run from here


def dataworth(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(Path(sys.prefix) / "bin" / "dataworth"), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_first_command_passes_the_first_time_and_says_where_to_look(tmp_path):
    clone, home, port = tmp_path / "clone", tmp_path / "home", free_port()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    home.mkdir()
    env = fresh_env(clone, home, port)
    log = tmp_path / "quickstart.log"
    started = time.monotonic()
    try:
        with log.open("w") as out:
            done = subprocess.run(["bash", "infra/quickstart.sh"], cwd=clone, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=1500, start_new_session=True)
        seconds = time.monotonic() - started
        text = log.read_text()
        assert done.returncode == 0, text[-6000:]
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / "firstrun.txt").write_text(f"first run on a fresh clone and home: {seconds:.0f} s\n")

        ui = f"http://127.0.0.1:{port}"
        assert f"{ui}/runs" in text and "dataworth server --stop" in text
        assert (home / ".prefect" / "prefect.db").is_file()  # Prefect's default home, created by this run
        assert httpx.get(f"{ui}/ui-settings", timeout=10).json()["api_url"] == f"{ui}/api"
        runs = httpx.post(f"{ui}/api/flow_runs/filter", json={}, timeout=10).json()
        assert runs and all(r["state_type"] == "COMPLETED" for r in runs), runs  # the nightly and its subflows
        keys = {a["key"] for a in httpx.post(f"{ui}/api/artifacts/filter", json={}, timeout=10).json()}
        assert {"provider-credit", "valuation-report"} <= {key.rsplit("-", 2)[0] for key in keys}  # -<workspace key>
        assert list((clone / ".dataworth" / "reports").glob("*/report.html"))

        # Asked again, the server that runs is reused rather than started twice.
        assert "already running" in dataworth(env, "server", "--background", "--port", str(port))
    finally:
        stopped = dataworth(env, "server", "--stop")
    assert "stopped the Prefect server" in stopped
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
