# Sourced by the quickstart and test scripts: settings that keep runs reproducible on small machines.
# One BLAS thread: eigendecompositions are 10-100x slower with two threads on a busy 2-core box.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
