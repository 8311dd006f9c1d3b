"""`dataworth server`: a Prefect API on loopback whose UI reaches it on the port it was given."""

from __future__ import annotations

import os
import subprocess

import httpx
import psutil
import pytest

from flows.server import api_url, server_env

from .processes import DATAWORTH, free_port, stop, tail, wait_for


def test_the_ui_is_told_the_api_of_this_port_not_of_the_shell(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")  # another server of the shell
    monkeypatch.delenv("PREFECT_UI_API_URL", raising=False)
    env = server_env("127.0.0.1", 4311)
    assert env["PREFECT_UI_API_URL"] == env["PREFECT_API_URL"] == "http://127.0.0.1:4311/api"
    assert (env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"]) == ("127.0.0.1", "4311")
    assert api_url("0.0.0.0", 4311) == "http://127.0.0.1:4311/api"  # what a browser here can open
    monkeypatch.setenv("PREFECT_UI_API_URL", "https://prefect.example.org/api")  # behind a proxy: kept
    assert server_env("127.0.0.1", 4311)["PREFECT_UI_API_URL"] == "https://prefect.example.org/api"


@pytest.mark.slow
def test_the_server_listens_on_loopback_only_and_its_ui_finds_its_api(tmp_path):
    port = free_port()  # not 4200: the UI must be told this port, not Prefect's default
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(DATAWORTH), "server", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    health = f"http://127.0.0.1:{port}/api/health"
    try:
        def healthy():
            assert server.poll() is None, f"the server exited:\n{tail(log)}"
            try:
                return httpx.get(health, timeout=2).json() is True
            except httpx.HTTPError:
                return False

        wait_for(healthy, 300, f"the health endpoint on port {port}", log)
        listening = {c.laddr.ip for c in psutil.net_connections("inet")
                     if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=5).json()
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api"

        # A service manager stops the process it started: the server itself, not a wrapper over it.
        server.terminate()
        server.wait(timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(health, timeout=2)
    finally:
        stop(server)
