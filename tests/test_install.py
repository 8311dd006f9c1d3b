"""A plain install works: the wheel holds only what users import, and `pip install` of it without
extras, in a virtual environment that sees no other packages, gives a `dataworth` that starts and
modules that all import (none needs a development-only package such as scipy or pytest)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .processes import REPO

pytestmark = pytest.mark.slow
PACKAGES = {"valuation", "storage", "scoring", "reporting", "evaluation", "sample", "tasks", "flows"}


def run(*command: str | Path, **kwargs) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, timeout=900, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, REPO, cwd=out)
    [built] = out.glob("dataworth-*.whl")
    return built


def test_the_wheel_ships_only_what_users_import(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == PACKAGES  # no benchmarks, infra, tests or docs
    assert {"sample/queries.jsonl", "sample/shards/night-01.jsonl"} <= set(names)  # the bundled sample


def test_a_plain_install_starts_the_cli_and_imports_every_module(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)  # without --system-site-packages: nothing of ours leaks in
    # The pinned versions (torch from the local CPU wheel), no extras. Not compiling every installed
    # module to bytecode halves the time (about 1.5 min instead of 3 on a busy 2-core machine).
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "-c", REPO / "infra" / "constraints.txt",
        wheel)
    assert "usage: dataworth" in run(venv / "bin" / "dataworth", "--help", cwd=tmp_path)
    every_module = (
        "import importlib, pkgutil, sys\n"
        f"for package in {sorted(PACKAGES)}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "import flows.nightly, flows.ingest, flows.fisher, flows.score, flows.deployments\n"
        "assert not {'scipy', 'pytest', 'sklearn'} & set(sys.modules), 'a development-only package was imported'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(PACKAGES)!r} and m.count('.') == 0))\n"
    )
    out = run(venv / "bin" / "python", "-c", every_module, cwd=tmp_path)  # not the checkout: the installed copy
    assert all(p in out for p in PACKAGES)
    site = run(venv / "bin" / "python", "-c", "import flows; print(flows.__file__)", cwd=tmp_path)
    assert str(venv) in site
