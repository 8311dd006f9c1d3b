#!/usr/bin/env bash
# Makes the Jane Austen corpus (Debian's r-cran-janeaustenr) available to the evaluation's real-text
# task and its smoke test. Installs the package only when it can (root with apt-get) and it is
# missing; never fails the caller, since the test skips itself (with its reason) without it.
# The package pulls in R (r-base-core); nothing here runs R: evaluation/corpora.py reads the data.
# Prints exactly one line.
set -uo pipefail

data=${DATAWORTH_JANEAUSTENR:-/usr/lib/R/site-library/janeaustenr/data}
if [ -f "$data/Rdata.rdb" ]; then
    echo "ensure-austen: using $data"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "ensure-austen: no $data and cannot install r-cran-janeaustenr here (needs root and apt-get); the Austen test will be skipped"
    exit 0
fi
log=$(mktemp -t ensure-austen.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
if apt-get update >"$log" 2>&1 && apt-get install -y --no-install-recommends r-cran-janeaustenr >>"$log" 2>&1; then
    echo "ensure-austen: installed r-cran-janeaustenr"
    rm -f "$log"
else
    echo "ensure-austen: apt-get could not install r-cran-janeaustenr (log: $log); the Austen test will be skipped"
fi
exit 0
