"""Shard validation: every bad line is named with its line number, field and reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.shards import discover_shards, quarantine, quarantined_hashes, validate_shard


def shard(tmp_path, name, lines: list[bytes]):
    (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
    return next(r for r in discover_shards(str(tmp_path)) if r.name == name)


def line(**fields) -> bytes:
    return json.dumps(fields).encode()


def problems(result):
    return {(p.line, p.field) for p in result.problems}


def test_good_shard_gives_examples_in_order(tmp_path):
    ref = shard(tmp_path, "a.jsonl", [line(id="x1", provider="p", text="hello"),
                                      line(id="x2", provider="p", prompt="q?", response="a.")])
    result = validate_shard(ref)
    assert result.ok and [e.id for e in result.examples] == ["x1", "x2"]
    assert result.examples[1].is_pair


def test_every_bad_line_is_reported(tmp_path):
    ref = shard(tmp_path, "b.jsonl", [
        line(id="ok", provider="p", text="fine"),
        b"\xff\xfe not utf-8",
        line(id="ok", provider="p", text="again"),
        line(id="e", provider="p", text="   "),
        line(id="t", provider="p", text="x", prompt="y", response="z"),
        line(id="old", provider="p", text="seen before"),
        line(id="a/b", provider="p", text="path"),
        line(id="n", provider=".hidden", text="dot"),
        b"[1, 2]",
    ])
    result = validate_shard(ref, known_ids={"old"})
    assert not result.ok and result.examples == []
    assert problems(result) == {(2, "line"), (3, "id"), (4, "text"), (5, "text"), (6, "id"), (7, "id"),
                                (8, "provider"), (9, "line")}
    reasons = {p.line: p.reason for p in result.problems}
    assert "duplicate of line 1" in reasons[3] and "already in the store" in reasons[6]


def test_size_limit_and_parquet(tmp_path):
    big = shard(tmp_path, "big.jsonl", [line(id=f"i{n}", provider="p", text="x" * 100) for n in range(50)])
    assert problems(validate_shard(big, max_bytes=1000)) == {(0, "file")}
    pq.write_table(pa.table({"id": ["r1", "r2"], "provider": ["p", "q"], "text": ["one", ""]}), tmp_path / "c.parquet")
    ref = next(r for r in discover_shards(str(tmp_path)) if r.name == "c.parquet")
    assert problems(validate_shard(ref)) == {(2, "text")}


def test_quarantine_keeps_the_shard_and_its_report(tmp_path):
    ref = shard(tmp_path, "d.jsonl", [b"{broken"])
    report = quarantine(validate_shard(ref), tmp_path / "q")
    assert json.loads(report.read_text())["problems"][0]["line"] == 1
    assert quarantined_hashes(tmp_path / "q") == {ref.sha256}
