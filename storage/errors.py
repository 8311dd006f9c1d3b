"""Errors the gradient store raises on purpose. Each message names the store and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class StoreError(Exception):
    """Base class of every error the gradient store raises on purpose."""


class StoreNotFoundError(StoreError):
    def __init__(self, url: str):
        super().__init__(f"no gradient store at {url}; create one with GradientStore.create")


class IncompleteStoreError(StoreNotFoundError):
    """A create() was killed before it finished: not a store yet, and create() starts it again."""

    def __init__(self, url: str):
        StoreError.__init__(
            self, f"the gradient store at {url} was never finished (its creation was interrupted); "
            "creating it again (GradientStore.create, or the next ingest) starts it afresh"
        )


class StoreExistsError(StoreError):
    def __init__(self, url: str):
        super().__init__(f"a gradient store already exists at {url}; open it with GradientStore.open")


class StoreFormatError(StoreError):
    """The group exists but is not a gradient store this code can read."""


class StoreLockedError(StoreError):
    def __init__(self, url: str, waited_s: float, holder: str):
        super().__init__(
            f"gradient store {url} is locked by another ingestion ({holder}); waited {waited_s:g} s. "
            "Wait for it to finish, or raise lock_timeout"
        )


class ModelMismatchError(StoreError):
    """Rows of one model cannot be appended to a store of another model's gradients."""

    def __init__(self, expected: str, got: str, differences: Sequence[str]):
        self.differences = list(differences)
        detail = "; ".join(differences) if differences else "fingerprints differ"
        super().__init__(f"model mismatch: expected {expected}, got {got} ({detail})")


class RowsInvalidError(StoreError):
    """Rows or metadata handed to the store do not fit its layout."""


class DuplicateIdsError(RowsInvalidError):
    """A shard whose example ids are already committed (or repeat within it): nothing is written."""
