"""How the tasks fail: transient faults are retried; everything else fails once, in one line.

A transient fault (a network filesystem or object store hiccup, the store's lock or lease held
or lost to another run) may pass, so Prefect retries it. Anything else - bad input, a wrong setting, a model that
does not fit the store, a bug - fails the same way on every try: the task fails at once with a
one-line message saying what to change, in its state and its log. Input errors leave no
traceback (the message is the whole story); an unexpected error logs its traceback once.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.states import Failed

from storage import StoreError, StoreLockedError
from storage.lease import LeaseLostError
from valuation import ValuationError

TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE, errno.ECONNRESET,
                              errno.ECONNABORTED, errno.ENETUNREACH, errno.EHOSTUNREACH})
# Raised on purpose with a message that names what is wrong and where: the message is enough.
INPUT_ERRORS = (ValueError, StoreError, ValuationError, FileNotFoundError, NotADirectoryError,
                IsADirectoryError, PermissionError)

F = TypeVar("F", bound=Callable[..., Any])


def is_transient(err: BaseException) -> bool:
    # A lost lease wrote nothing past the manifest: a retry takes the lease again and recommits.
    if isinstance(err, StoreLockedError | LeaseLostError | ConnectionError | TimeoutError):
        return True
    return isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry only what may pass (a failed state that carries no
    exception was returned on purpose, so it is final)."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if isinstance(err, INPUT_ERRORS) and text else f"{type(err).__name__}: {text}".rstrip(": ")


def fails_in_one_line(fn: F) -> F:
    """Wrap a task's function: a failure that is not transient becomes the task's Failed state with
    a one-line message (never retried); a transient one propagates to Prefect's retries."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if is_transient(err):
                raise
            message = one_line(err)
            # An error wrapped to name its context keeps the traceback only if what it wraps is unexpected.
            get_run_logger().error(message, exc_info=not isinstance(err.__cause__ or err, INPUT_ERRORS))
            return Failed(message=message)

    return run  # type: ignore[return-value]
