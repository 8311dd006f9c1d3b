#!/usr/bin/env bash
# First command of the README: install, then run the nightly valuation on the bundled sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
source infra/env.sh
exec .venv/bin/dataworth run nightly "$@"
