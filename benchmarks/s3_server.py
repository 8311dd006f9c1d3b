"""A real S3 API on loopback for tests and benchmarks: moto's server in a process of its own.

    with moto_server() as endpoint:          # http://127.0.0.1:<free port>
        os.environ.update(s3_environment(endpoint))

Every S3 client (botocore, so s3fs and zarr's FsspecStore) reads the endpoint and credentials
from the environment, so child processes reach the same server without options. Needs the dev
extra (moto[server], s3fs).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


def s3_environment(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(endpoint: str, server: subprocess.Popen, timeout: float) -> None:
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


@contextlib.contextmanager
def moto_server(timeout: float = 60.0) -> Iterator[str]:
    """Run moto's S3 server on a free loopback port; yields its endpoint URL, stops it after."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, server, timeout)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def make_bucket(endpoint: str, bucket: str):
    """Create `bucket`; returns the s3fs filesystem that made it (to empty and remove it after)."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True,
                           use_listings_cache=False)
    fs.mkdir(bucket)
    return fs
