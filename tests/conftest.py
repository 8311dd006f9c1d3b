import os
import tempfile

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
