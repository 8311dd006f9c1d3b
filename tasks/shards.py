"""Landing shards: find them, identify them by content, validate every line, quarantine the bad.

Pure functions over fsspec paths; the Prefect tasks in tasks/ingest.py wrap them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec

from valuation.data import Example, parse_jsonl

SHARD_SUFFIXES = (".jsonl", ".parquet")
# Ids, providers and shard names end up in file names and report paths: no separators, no
# leading dot, so none can escape a directory.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_TEXT_CHARS = 1_000_000


@dataclass(frozen=True)
class ShardRef:
    name: str
    url: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based; 0 for the file as a whole
    field: str
    reason: str


@dataclass
class ValidatedShard:
    shard: ShardRef
    examples: list[Example] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def discover_shards(landing: str) -> list[ShardRef]:
    """Every *.jsonl / *.parquet file directly in `landing`, by name, with its content hash."""
    fs, root = fsspec.core.url_to_fs(landing)
    if not fs.isdir(root):
        raise FileNotFoundError(f"landing location {landing!r} is not a directory")
    refs = []
    for path in sorted(fs.ls(root, detail=False)):
        if not path.endswith(SHARD_SUFFIXES):
            continue
        data = fs.cat_file(path)
        url = fs.unstrip_protocol(path) if "://" in landing else path
        refs.append(ShardRef(Path(path).name, url, hashlib.sha256(data).hexdigest(), len(data)))
    return refs


def _records(ref: ShardRef, data: bytes) -> Iterable[tuple[int, object, LineProblem | None]]:
    """(line number, parsed record, problem) for every line or row of the shard."""
    if ref.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as err:  # pyarrow raises several types for corrupt files
            yield 0, None, LineProblem(0, "file", f"not a readable Parquet file: {err}")
            return
        for number, record in enumerate(table.to_pylist(), start=1):
            yield number, record, None
        return
    for line in parse_jsonl(data):
        problem = LineProblem(line.number, "line", line.problem) if line.problem else None
        yield line.number, line.value, problem


def _check_record(record: object, line: int) -> list[LineProblem]:
    if not isinstance(record, dict):
        return [LineProblem(line, "line", "not a JSON object")]
    problems = []
    for key in ("id", "provider"):
        value = record.get(key)
        if value is None or value == "":
            problems.append(LineProblem(line, key, "missing"))
        elif not isinstance(value, str) or not SAFE_NAME.match(value):
            problems.append(LineProblem(line, key, f"{value!r} is not 1-128 of [A-Za-z0-9._-] starting alphanumeric"))
    has_text = "text" in record
    has_pair = "prompt" in record or "response" in record
    if has_text and has_pair:
        problems.append(LineProblem(line, "text", "give either text or prompt+response, not both"))
    elif not has_text and not has_pair:
        problems.append(LineProblem(line, "text", "missing (need text, or prompt and response)"))
    for key in ("text",) if has_text else ("prompt", "response") if has_pair else ():
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(LineProblem(line, key, "missing or empty"))
        elif len(value) > MAX_TEXT_CHARS:
            problems.append(LineProblem(line, key, f"longer than {MAX_TEXT_CHARS} characters"))
    return problems


def validate_shard(
    ref: ShardRef, known_ids: set[str] | frozenset[str] = frozenset(), max_bytes: int | None = None
) -> ValidatedShard:
    """Check every line; the shard is good only if every line is."""
    result = ValidatedShard(ref)
    if not SAFE_NAME.match(ref.name):
        result.problems.append(LineProblem(0, "file", f"shard name {ref.name!r} is not a safe file name"))
    if max_bytes is not None and ref.size_bytes > max_bytes:
        result.problems.append(LineProblem(0, "file", f"{ref.size_bytes} bytes exceeds the {max_bytes}-byte limit"))
        return result
    data = _read_bytes(ref.url)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        result.problems.append(LineProblem(0, "file", "content changed since it was discovered"))
        return result
    first_line: dict[str, int] = {}
    for line, record, problem in _records(ref, data):
        if problem:
            result.problems.append(problem)
            continue
        problems = _check_record(record, line)
        example_id = record.get("id") if isinstance(record, dict) else None
        if not problems:
            if example_id in first_line:
                problems.append(LineProblem(line, "id", f"duplicate of line {first_line[example_id]}"))
            elif example_id in known_ids:
                problems.append(LineProblem(line, "id", f"{example_id!r} is already in the store"))
        if isinstance(example_id, str):
            first_line.setdefault(example_id, line)
        if problems:
            result.problems.extend(problems)
            continue
        fields = {k: record[k] for k in ("id", "provider", "text", "prompt", "response") if k in record}
        result.examples.append(Example(**fields))
    if not result.examples and not result.problems:
        result.problems.append(LineProblem(0, "file", "no examples"))
    if result.problems:
        result.examples = []
    return result


def quarantine(validated: ValidatedShard, directory: Path) -> Path:
    """Copy a bad shard aside with its line report; returns the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{validated.shard.sha256[:12]}-{Path(validated.shard.name).name}"
    target = directory / stem
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(_read_bytes(validated.shard.url))
        tmp.replace(target)
    report = directory / f"{stem}.problems.json"
    payload = {"shard": asdict(validated.shard), "problems": [asdict(p) for p in validated.problems]}
    report.write_text(json.dumps(payload, indent=2))
    return report


def quarantined_hashes(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {json.loads(p.read_text())["shard"]["sha256"] for p in directory.glob("*.problems.json")}
