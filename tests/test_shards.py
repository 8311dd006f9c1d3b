"""Shard validation: every bad line is named with its line number, field and reason."""

import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

import tasks.shards
from tasks.shards import discover_shards, quarantine, quarantined_hashes, validate_shard


def shard(tmp_path, name, lines: list[bytes]):
    (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
    return next(r for r in discover_shards(str(tmp_path)).shards if r.name == name)


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
    ref = next(r for r in discover_shards(str(tmp_path)).shards if r.name == "c.parquet")
    assert problems(validate_shard(ref)) == {(2, "text")}


def test_quarantine_keeps_the_shard_and_its_report(tmp_path):
    ref = shard(tmp_path, "d.jsonl", [b"{broken"])
    report = quarantine(validate_shard(ref), tmp_path / "q")
    assert json.loads(report.read_text())["problems"][0]["line"] == 1
    assert quarantined_hashes(tmp_path / "q") == {ref.sha256}


def backdate(path, seconds=3600):
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_shard_still_being_written_waits_for_a_later_run(tmp_path):
    (tmp_path / "done.jsonl").write_bytes(line(id="a", provider="p", text="finished") + b"\n")
    backdate(tmp_path / "done.jsonl")
    (tmp_path / "uploading.jsonl").write_bytes(line(id="b", provider="p", text="half of it"))
    for name in ("x.jsonl.part", "x.jsonl.tmp", "x.jsonl.partial", "x.jsonl.crdownload", ".x.jsonl", ".x.jsonl.AbC123"):
        (tmp_path / name).write_bytes(b"temporary names of uploads in progress")
        backdate(tmp_path / name)
    found = discover_shards(str(tmp_path), settle_seconds=60)
    assert [r.name for r in found.shards] == ["done.jsonl"]
    assert [(s.name, "modified" in s.reason) for s in found.waiting] == [("uploading.jsonl", True)]
    assert found.refused == []
    taken = discover_shards(str(tmp_path), settle_seconds=0).shards
    assert [r.name for r in taken] == ["done.jsonl", "uploading.jsonl"]


def test_landing_hazards_are_refused_without_reading_them(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "dir.jsonl").mkdir()  # a directory with a shard's name does not stop discovery
    (landing / "passwd.jsonl").symlink_to("/etc/passwd")  # a link out of the landing location
    (landing / "good.jsonl").write_bytes(line(id="a", provider="p", text="fine") + b"\n")
    (landing / "alias.jsonl").symlink_to(landing / "good.jsonl")  # a link inside it is just a file
    big = landing / "big.jsonl"
    big.write_bytes(b"x" * 5000)
    read = []
    real_open = tasks.shards.fsspec.open

    def spy(url, *args, **kwargs):
        read.append(str(url))
        return real_open(url, *args, **kwargs)

    monkeypatch.setattr(tasks.shards.fsspec, "open", spy)
    found = discover_shards(str(landing), max_bytes=1000)
    assert sorted(r.name for r in found.shards) == ["alias.jsonl", "big.jsonl", "good.jsonl"]
    assert sorted(s.name for s in found.refused) == ["dir.jsonl", "passwd.jsonl"]
    assert all("/etc/passwd" not in url and "big.jsonl" not in url for url in read)  # never opened
    oversized = next(r for r in found.shards if r.name == "big.jsonl")
    result = validate_shard(oversized, max_bytes=1000)
    assert problems(result) == {(0, "file")}
    report = quarantine(result, tmp_path / "q")
    assert not any("big.jsonl" in url for url in read)
    assert [p.name for p in (tmp_path / "q").iterdir()] == [report.name]  # the report alone: nothing copied
    assert quarantined_hashes(tmp_path / "q") == {oversized.sha256}


def test_a_truncated_quarantine_report_does_not_break_later_runs(tmp_path):
    ref = shard(tmp_path, "d.jsonl", [b"{broken"])
    report = quarantine(validate_shard(ref), tmp_path / "q")
    report.write_text("")  # a crash while it was written
    (tmp_path / "q" / "other.problems.json").write_text('{"shard": ')
    assert quarantined_hashes(tmp_path / "q") == set()  # not held: validated again, reported again
    quarantine(validate_shard(ref), tmp_path / "q")
    assert quarantined_hashes(tmp_path / "q") == {ref.sha256}


def test_mixed_parquet_and_explicit_nulls_are_legitimate(tmp_path):
    # What converting a JSONL of documents and instruction pairs to Parquet gives: nulls in the unused columns.
    pq.write_table(pa.table({"id": ["t1", "p1"], "provider": ["p", "q"], "text": ["a document", None],
                             "prompt": [None, "Question?"], "response": [None, "Answer."]}), tmp_path / "m.parquet")
    ref = next(r for r in discover_shards(str(tmp_path)).shards if r.name == "m.parquet")
    result = validate_shard(ref)
    assert result.ok, result.problems
    assert [(e.text, e.prompt) for e in result.examples] == [("a document", None), (None, "Question?")]
    ref = shard(tmp_path, "n.jsonl", [line(id="t2", provider="p", text="doc", prompt=None, response=None),
                                      line(id="p2", provider="p", text=None, prompt="Q?", response="A.")])
    result = validate_shard(ref)
    assert result.ok, result.problems
    assert result.examples[1].is_pair and not result.examples[0].is_pair


def test_a_lone_surrogate_is_a_bad_line(tmp_path):
    surrogate = b'{"id": "s", "provider": "p", "text": "\\ud800"}'  # valid JSON, not text
    ref = shard(tmp_path, "s.jsonl", [line(id="ok", provider="p", text="fine"), surrogate])
    result = validate_shard(ref)
    assert problems(result) == {(2, "line")} and "surrogate" in result.problems[0].reason


def test_a_provider_spelled_like_another_but_for_case_is_refused(tmp_path):
    ref = shard(tmp_path, "c.jsonl", [line(id="a", provider="weather-desk", text="one"),
                                      line(id="b", provider="Weather-Desk", text="two")])
    result = validate_shard(ref)
    assert problems(result) == {(2, "provider")} and "'weather-desk'" in result.problems[0].reason
    ref = shard(tmp_path, "d.jsonl", [line(id="c", provider="WEATHER-desk", text="three")])
    result = validate_shard(ref, known_providers={"weather-desk", "qa-tutor"})
    assert problems(result) == {(1, "provider")} and "already in the store" in result.problems[0].reason
    assert validate_shard(ref, known_providers={"WEATHER-desk"}).ok
