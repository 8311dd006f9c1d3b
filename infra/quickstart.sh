#!/usr/bin/env bash
# First command of the README: install, start (or reuse) a local Prefect server, run the nightly
# valuation on the bundled sample against it, and say where to look at the result in the UI.
# Arguments go to `dataworth run nightly` (e.g. --workspace, --landing, --model).
# DATAWORTH_PORT picks the server's port (default 4200); DATAWORTH_VENV an existing environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
source infra/env.sh
venv=${DATAWORTH_VENV:-.venv}
# This checkout's code first, also when the environment belongs to another checkout.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
port=${DATAWORTH_PORT:-4200}

"$venv/bin/dataworth" server --background --port "$port"
# Runs go to that server (whatever a Prefect profile says), so they stay visible after the run.
export PREFECT_API_URL="http://127.0.0.1:$port/api"
status=0
"$venv/bin/dataworth" run nightly "$@" || status=$?

cat <<MSG

Runs, logs and artifacts (provider credit, the Markdown report) in the Prefect UI: http://127.0.0.1:$port/runs
The server keeps running so you can look; stop it with: $venv/bin/dataworth server --stop
MSG
exit $status
