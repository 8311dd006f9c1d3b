"""The PCA calibration sample: taken in turn from each shard, capped, and named by a hash."""

import pytest

from tasks.calibration import calibration_sample
from tasks.shards import ShardRef, ValidatedShard
from valuation.data import Example


def shard(name: str, n: int) -> ValidatedShard:
    examples = [Example(id=f"{name}-{i}", provider=name, text=f"text {i}") for i in range(n)]
    return ValidatedShard(ShardRef(name, f"/landing/{name}", f"sha-{name}", 1), examples)


def test_the_sample_takes_each_shard_in_turn_up_to_the_cap():
    examples, record = calibration_sample([shard("a", 5), shard("b", 1), shard("c", 3)], cap=6)
    assert [e.id for e in examples] == ["a-0", "b-0", "c-0", "a-1", "c-1", "a-2"]
    assert record.examples == 6 and [s.name for s in record.shards] == ["a", "b", "c"]
    again, same = calibration_sample([shard("a", 5), shard("b", 1), shard("c", 3)], cap=6)
    assert same.sha256 == record.sha256
    _, other = calibration_sample([shard("a", 5), shard("b", 1), shard("c", 3)], cap=5)
    assert other.sha256 != record.sha256


def test_shards_that_gave_nothing_are_not_named():
    _, record = calibration_sample([shard("a", 2), shard("b", 2)], cap=1)
    assert [s.name for s in record.shards] == ["a"]


def test_no_examples_is_a_clear_error():
    with pytest.raises(ValueError, match="no valid examples to fit the PCA projection on"):
        calibration_sample([shard("a", 0)], cap=4)
