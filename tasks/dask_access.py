"""Which Dask schedulers a flow run may score on: those the machine running it allows, never a run's own pick.

A Dask client unpickles what the scheduler sends, so a scheduler is code execution on the flow
run's host. Anyone who can reach the Prefect API can start a run with any parameters; the
addresses a run may use are therefore set where the runs execute (the environment of the worker
or of `dataworth serve`), not in the run's parameters.
"""

from __future__ import annotations

import os

ALLOWED = "DATAWORTH_DASK_ADDRESSES"


def allowed_addresses() -> set[str]:
    """The scheduler addresses in DATAWORTH_DASK_ADDRESSES (comma- or space-separated)."""
    return set(os.environ.get(ALLOWED, "").replace(",", " ").split())


def check_dask_address(address: str | None) -> None:
    """Raise a one-line ValueError unless `address` is empty (local threads) or allowed here."""
    if address and address.strip() not in allowed_addresses():
        raise ValueError(f"dask_address {address!r} is not one this machine allows: list it in {ALLOWED} in the "
                         "environment of the worker (or `dataworth serve`) that runs the flows, or leave it empty "
                         "to score with local threads")
