import os
import tempfile

import pytest

# Before torch/numpy load: one BLAS thread keeps small eigendecompositions fast and repeatable.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Prefect keeps its database and cached task results under PREFECT_HOME: one fresh home per test
# session, so nothing leaks between runs or into the user's own ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="dataworth-prefect-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Session fixtures shared by the flow, stability and query tests (after the environment above).
from .flow_fixtures import prefect_api, sample_model_dir  # noqa: E402, F401
from .s3_fixtures import s3_endpoint, s3_url  # noqa: E402, F401


def pytest_collection_modifyitems(items):
    """A test that needs the trained sample model or a Prefect server or the S3 server is slow, whoever wrote it:
    `-m "not slow"` leaves out every test that pays for them."""
    for item in items:
        if {"sample_model_dir", "prefect_api", "s3_endpoint"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
