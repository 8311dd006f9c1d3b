#!/usr/bin/env bash
# Second command of the README (and all that .ci/run does): install, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
bash infra/ensure-browser.sh  # headless Chromium for the HTML report test
bash infra/ensure-austen.sh   # Jane Austen's novels (a Debian package) for the real-text eval smoke test
source infra/env.sh
.venv/bin/ruff check .
.venv/bin/mypy  # the packages, as configured in pyproject.toml
exec .venv/bin/python -m pytest "$@"
