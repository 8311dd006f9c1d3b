"""`dataworth server`: a Prefect API on loopback whose UI reaches it on the port it was given."""

from __future__ import annotations

import httpx
import psutil
import pytest

from flows.server import api_url, server_env

from .processes import dataworth_server


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
    with dataworth_server(tmp_path) as server:
        listening = {c.laddr.ip for c in psutil.net_connections("inet")
                     if c.laddr.port == server.port and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        settings = httpx.get(f"http://127.0.0.1:{server.port}/ui-settings", timeout=5).json()
        assert settings["api_url"] == server.api

        # A service manager stops the process it started: the server itself, not a wrapper over it.
        server.process.terminate()
        server.process.wait(timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.api}/health", timeout=2)
