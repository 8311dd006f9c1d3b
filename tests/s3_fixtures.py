"""A real S3 API on loopback: moto's server in its own process, one fresh bucket per test.

conftest imports this for every test, so it imports nothing heavy at module level. The server
starts once per session, on the first test that asks for `s3_url`; each test gets its own bucket
(emptied and deleted afterwards) and the environment every S3 client reads (the endpoint and
dummy credentials), so child processes and flow tasks reach the same server without options.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.processes import free_port

_buckets = itertools.count()


def _wait_until_up(endpoint: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.returncode} before it served {endpoint}")
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on a free loopback port, running for the whole session."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, server)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_url(s3_endpoint, monkeypatch) -> Iterator[str]:
    """`s3://<fresh bucket>/store.zarr` on the loopback server, with the client environment set."""
    import s3fs

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"dataworth-test-{os.getpid()}-{next(_buckets)}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing", skip_instance_cache=True,
                           use_listings_cache=False)
    fs.mkdir(bucket)
    try:
        yield f"s3://{bucket}/store.zarr"
    finally:
        fs.rm(bucket, recursive=True)
