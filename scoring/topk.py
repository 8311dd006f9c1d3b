"""Exact top-k lists ordered by score (descending), then row index (ascending), as sorted uint64 keys.

A key packs a float32 score's order-preserving bits, inverted so that larger scores come first,
above a 32-bit row index: one ascending integer sort then orders by score and breaks every tie by
the smaller row, so the lists are the same however the rows were split into chunks and tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY = np.uint64(np.iinfo(np.uint64).max)  # an empty slot sorts after every real key
MAX_ROWS = (1 << 32) - 1  # row indices must fit the key's low 32 bits
_SIGN = np.uint32(1 << 31)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_SLOT = np.uint64(48)
_TIE = np.uint64(16)
_TIE_MASK = np.uint64(0xFFFF)
MAX_GROUPS = 1 << 16  # lists one absorb may touch (16 bits of its sort key)
MAX_OFFSET = (1 << 16) - 1024  # candidate row offsets within one absorb; k must stay at most 1024


def _descending(scores: np.ndarray) -> np.ndarray:
    """32-bit codes of finite float32 scores whose ascending order is the scores' descending order."""
    # Adding +0.0 turns -0.0 into +0.0: the two compare equal, so they must tie on the row index.
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits & _SIGN, ~bits, bits | _SIGN)  # the float order as unsigned integers
    return (~ascending).astype(np.uint64)


def encode(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Keys of finite float32 scores at int row indices (< 2^32)."""
    return (_descending(scores) << _SHIFT) | np.asarray(rows).astype(np.uint64)


def decode(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 scores, int64 rows) of keys; -inf and -1 for empty slots."""
    ascending = ~(keys >> _SHIFT).astype(np.uint32)
    bits = np.where(ascending & _SIGN, ascending & ~_SIGN, ~ascending)
    empty = keys == EMPTY
    scores = np.where(empty, -np.inf, bits.view(np.float32).astype(np.float64))
    rows = np.where(empty, -1, (keys & _LOW).astype(np.int64))
    return scores, rows


def kth_scores(keys: np.ndarray) -> np.ndarray:
    """Per list (rows of `keys`), the float32 score a new entry must beat: the k-th, -inf while not full."""
    scores, _ = decode(keys[:, -1])
    return scores.astype(np.float32)


@dataclass
class GroupedTopK:
    """One top-k list per group (e.g. per query and provider): groups x k keys, best first."""

    keys: np.ndarray

    @classmethod
    def empty(cls, groups: int, k: int) -> GroupedTopK:
        return cls(np.full((groups, k), EMPTY, dtype=np.uint64))

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    def absorb(self, groups: np.ndarray, scores: np.ndarray, offsets: np.ndarray, first_row: int) -> np.ndarray:
        """Merge candidates into their groups' lists: rows `first_row + offsets` (offsets below
        MAX_OFFSET, rows after every row already listed) with float32 `scores`. At most MAX_GROUPS
        groups may be touched at once. Returns the touched groups, ascending."""
        k = self.k
        touched_mask = np.zeros(len(self.keys), dtype=bool)
        touched_mask[groups] = True
        touched = np.flatnonzero(touched_mask)
        if len(touched) > MAX_GROUPS:
            raise ValueError(f"{len(touched)} top-k lists touched at once; at most {MAX_GROUPS}")
        slot = np.empty(len(self.keys), dtype=np.uint64)
        slot[touched] = np.arange(len(touched), dtype=np.uint64)
        old = self.keys[touched]
        # One 64-bit sort key: list slot (16 bits) | descending score (32) | tie-break (16), where
        # the tie-break puts the old entries (rank 0..k-1, all of earlier rows) before the new ones
        # (k + offset, in row order).
        old_keys = ((np.repeat(slot[touched], k) << _SLOT) | ((old.ravel() >> _SHIFT) << _TIE)
                    | np.tile(np.arange(k, dtype=np.uint64), len(touched)))
        new_keys = ((slot[groups] << _SLOT) | (_descending(scores) << _TIE)
                    | (np.uint64(k) + np.asarray(offsets).astype(np.uint64)))
        merged = np.sort(np.concatenate([old_keys, new_keys]))
        run_start = np.ones(len(merged), dtype=bool)
        run_start[1:] = (merged[1:] >> _SLOT) != (merged[:-1] >> _SLOT)
        starts = np.flatnonzero(run_start)
        rank = np.arange(len(merged)) - np.repeat(starts, np.diff(np.append(starts, len(merged))))
        best = merged[rank < k]  # each run holds its k old entries and at least one new: k kept
        tie = (best & _TIE_MASK).astype(np.int64)
        from_old = tie < k
        rows = np.where(from_old, old.ravel()[np.repeat(np.arange(len(touched)), k) * k + np.minimum(tie, k - 1)]
                        & _LOW, np.uint64(first_row) + (tie - k).astype(np.uint64))
        self.keys[touched] = (((best >> _TIE) & _LOW) << _SHIFT | rows).reshape(len(touched), k)
        return touched

    def merge(self, other: GroupedTopK) -> GroupedTopK:
        """The lists over the union of two disjoint sets of rows."""
        return GroupedTopK(np.sort(np.concatenate([self.keys, other.keys], axis=1), axis=1)[:, : self.k])
