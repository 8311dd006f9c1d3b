"""Named crash points for testing crash safety with a real SIGKILL.

Set DATAWORTH_STORE_CRASH_AT=<point> in a writer's environment and it kills itself at that step
of a write: no finally blocks, no atexit, exactly like a machine losing power to the process.
Unset (always, outside tests), each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "DATAWORTH_STORE_CRASH_AT"
ROWS_WRITTEN = "rows_written"  # rows, metadata and aggregates written; manifest entry not yet
MANIFEST_WRITTEN = "manifest_written"  # shards committed; old totals and staging groups not yet removed
SELF_INFLUENCE_WRITING = "self_influence_writing"  # a snapshot's new self-influence array created, not yet filled
STAGED_CHUNK_WRITTEN = "staged_chunk_written"  # a logger wrote rows into its staging group; more to come
CREATED = "created"  # a new store's arrays and groups written; its identity attributes not yet


def crash_point(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
