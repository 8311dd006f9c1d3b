"""A real S3 API on loopback: moto's server in its own process, one fresh bucket per test.

conftest imports this for every test, so it imports nothing heavy at module level. The server
starts once per session, on the first test that asks for `s3_url`; each test gets its own bucket
(emptied and deleted afterwards) and the environment every S3 client reads (the endpoint and
dummy credentials), so child processes and flow tasks reach the same server without options.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from benchmarks.s3_server import make_bucket, moto_server, s3_environment

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on a free loopback port, running for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_url(s3_endpoint, monkeypatch) -> Iterator[str]:
    """`s3://<fresh bucket>/store.zarr` on the loopback server, with the client environment set."""
    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"dataworth-test-{os.getpid()}-{next(_buckets)}"
    fs = make_bucket(s3_endpoint, bucket)
    try:
        yield f"s3://{bucket}/store.zarr"
    finally:
        fs.rm(bucket, recursive=True)
