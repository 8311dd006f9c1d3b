"""What a report's provenance names: enough to reproduce the figures, nothing of the operator's
machine (no local paths) and nothing of another provider (no shard names)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path, PurePosixPath

from storage.store import code_version as package_version

_CHECKOUT = Path(__file__).resolve().parent.parent


@cache
def code_version() -> str:
    """`git:<describe>` of the checkout the code runs from ("-dirty" when it has local edits),
    else the installed package's version: a wheel's version names its code, a checkout's does not."""
    if (_CHECKOUT / ".git").exists():
        try:
            described = subprocess.run(
                ["git", "-C", str(_CHECKOUT), "describe", "--always", "--dirty", "--tags"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            described = ""  # no git, or not a repository after all: the package version says what it can
        if described:
            return f"git:{described}"
    return package_version()


def location_name(location: str) -> str:
    """A store or model location as a name: the last part of a local path ("store.zarr"), or a
    URL's scheme and last part ("s3://…/store.zarr"); a hub id ("org/model") as it is."""
    if "://" in location:
        scheme, rest = location.split("://", 1)
        name = PurePosixPath(rest.rstrip("/")).name
        return f"{scheme}://…/{name}" if scheme != "file" else name
    path = Path(location).expanduser()
    return path.name if path.is_absolute() or path.exists() or location.startswith(".") else location


def store_version(rows: int, shard_hashes: Sequence[str]) -> str:
    """Rows, shards and a digest of the shards' content hashes in commit order: it tells two
    stores apart without naming a shard, whose name may be another provider's."""
    digest = hashlib.sha256("\n".join(shard_hashes).encode()).hexdigest()
    return f"{rows} rows, {len(shard_hashes)} shards, manifest {digest[:12]}"
