#!/usr/bin/env bash
# Makes headless Chromium available to the HTML report test, which renders the page and takes a
# screenshot. Installs Debian's package only when it can (root with apt-get) and none is on PATH;
# never fails the caller, since the test skips itself (with its reason) when no browser is found.
# Prints exactly one line.
set -uo pipefail

# The same names, in the same order, that tests/test_reporting.py looks for.
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if path=$(command -v "$name"); then
        echo "ensure-browser: using $path"
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "ensure-browser: no chromium on PATH and cannot install it here (needs root and apt-get); the HTML screenshot test will be skipped"
    exit 0
fi

log=$(mktemp -t ensure-browser.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
# The sandbox helper (the only recommended package) is not needed: the test runs with --no-sandbox.
if apt-get update >"$log" 2>&1 && apt-get install -y --no-install-recommends chromium >>"$log" 2>&1; then
    echo "ensure-browser: installed $(command -v chromium)"
    rm -f "$log"
else
    echo "ensure-browser: apt-get could not install chromium (log: $log); the HTML screenshot test will be skipped"
fi
exit 0
