"""Landing shards: find them, identify them by content, validate every line, quarantine the bad.

Pure functions over fsspec paths; the Prefect tasks in tasks/ingest.py wrap them.

A shard is taken only when it is ready. Uploads that write under a temporary name and rename when
done (rsync, browsers, `cp x x.part && mv x.part x.jsonl`) are never seen before the rename: only
names ending in .jsonl or .parquet count, and never dotfiles. An upload written in place under its
final name is left for a later run while it was modified less than `settle_seconds` ago.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from valuation.data import Example, parse_jsonl

SHARD_SUFFIXES = (".jsonl", ".parquet")
# Ids, providers and shard names end up in file names and report paths: no separators, no
# leading dot, so none can escape a directory.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_TEXT_CHARS = 1_000_000
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ShardRef:
    name: str
    url: str
    # Of the content; for a file over the size limit, which is never read, of its name, size and
    # modification time (a replaced file is looked at again).
    sha256: str
    size_bytes: int
    oversized: bool = False


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


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass
class Landing:
    """What discovery found: shards to look at, files not ready yet, and files it will not touch."""

    shards: list[ShardRef] = field(default_factory=list)
    waiting: list[Skipped] = field(default_factory=list)  # may be ready at a later run
    refused: list[Skipped] = field(default_factory=list)  # not shards: directories, links leaving the landing


def _read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def _sha256(url: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _modified_at(info: dict) -> float | None:
    """Seconds since the epoch of the last modification, from whichever key the filesystem uses."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _is_shard_name(name: str) -> bool:
    return name.endswith(SHARD_SUFFIXES) and not name.startswith(".")


def _local_target(path: str, root: str) -> tuple[str | None, str]:
    """(the real file behind a local symlink, or None, why not): links that leave the landing
    location are refused, so a link to /etc/passwd is never read or copied."""
    target = os.path.realpath(path)
    if os.path.commonpath([target, os.path.realpath(root)]) != os.path.realpath(root):
        return None, "a symbolic link to outside the landing location; copy the file in instead"
    if not os.path.isfile(target):
        return None, "a symbolic link to something that is not a file"
    return target, ""


def discover_shards(landing: str, *, max_bytes: int | None = None, settle_seconds: float = 0.0,
                    now: float | None = None) -> Landing:
    """Every ready *.jsonl / *.parquet file directly in `landing`, by name, with its content hash.

    Files over `max_bytes` are not read (their hash is of name, size and time): validation refuses
    them. Nothing here reads a file that discovery does not return.
    """
    fs, root = fsspec.core.url_to_fs(landing)
    if not fs.isdir(root):
        raise FileNotFoundError(f"landing location {landing!r} is not a directory")
    now = time.time() if now is None else now
    local = isinstance(fs, LocalFileSystem)  # only there can an entry be a symbolic link
    found = Landing()
    for info in sorted(fs.ls(root, detail=True), key=lambda i: i["name"]):
        path = info["name"]
        name = Path(path).name
        if not _is_shard_name(name):
            continue
        url = fs.unstrip_protocol(path) if "://" in landing else path
        modified = _modified_at(info)
        if local and info.get("islink"):
            target, why = _local_target(path, root)
            if target is None:
                found.refused.append(Skipped(name, why))
                continue
            url, modified = target, os.stat(target).st_mtime
        elif info.get("type") != "file":
            found.refused.append(Skipped(name, f"a {info.get('type') or 'non-file'} entry, not a file"))
            continue
        if modified is not None and now - modified < settle_seconds:
            found.waiting.append(Skipped(name, f"modified {now - modified:.0f} s ago (less than {settle_seconds:g} s): "
                                               "it may still be uploading"))
            continue
        size = int(info.get("size") or 0)
        if max_bytes is not None and size > max_bytes:
            identity = hashlib.sha256(f"unread\0{name}\0{size}\0{modified}".encode()).hexdigest()
            found.shards.append(ShardRef(name, url, identity, size, oversized=True))
            continue
        found.shards.append(ShardRef(name, url, _sha256(url), size))
    return found


def provider_key(name: str) -> str:
    """Provider names that differ only in case or Unicode form are one provider to a person (and
    one export file on macOS and Windows): they compare equal under this key."""
    return unicodedata.normalize("NFC", name).casefold()


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


class ShardChanged(Exception):
    """The file changed between discovery and validation: still being written; try a later run."""


def _provider_clash(provider: str, spellings: dict[str, str], known: dict[str, str]) -> str | None:
    key = provider_key(provider)
    if known.get(key, provider) != provider:
        return f"{provider!r} differs only in case or Unicode form from {known[key]!r}, already in the store; " \
               "spell it the same way"
    if spellings.get(key, provider) != provider:
        return f"{provider!r} differs only in case or Unicode form from {spellings[key]!r} earlier in this shard; " \
               "spell it the same way"
    return None


def validate_shard(
    ref: ShardRef, known_ids: set[str] | frozenset[str] = frozenset(), max_bytes: int | None = None,
    known_providers: Iterable[str] = (),
) -> ValidatedShard:
    """Check every line; the shard is good only if every line is.

    Raises ShardChanged when the content is no longer what discovery hashed.
    """
    result = ValidatedShard(ref)
    if not SAFE_NAME.match(ref.name):
        result.problems.append(LineProblem(0, "file", f"shard name {ref.name!r} is not a safe file name"))
    if ref.oversized or (max_bytes is not None and ref.size_bytes > max_bytes):
        limit = f"the {max_bytes}-byte limit" if max_bytes is not None else "the size limit"
        result.problems.append(LineProblem(0, "file", f"{ref.size_bytes} bytes exceeds {limit} (max_shard_mb)"))
        return result
    data = _read_bytes(ref.url)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ShardChanged(f"{ref.name} changed since it was discovered")
    known = {provider_key(p): p for p in known_providers}
    spellings: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, record, problem in _records(ref, data):
        if problem:
            result.problems.append(problem)
            continue
        if isinstance(record, dict):
            # An explicit null is an absent field: Parquet mixing documents and pairs has nulls in
            # the columns a row does not use, and so has JSONL from many tools.
            record = {k: v for k, v in record.items() if v is not None}
        problems = _check_record(record, line)
        if not isinstance(record, dict):  # reported by the check
            result.problems.extend(problems)
            continue
        example_id = record.get("id")
        if not problems:
            if example_id in first_line:
                problems.append(LineProblem(line, "id", f"duplicate of line {first_line[example_id]}"))
            elif example_id in known_ids:
                problems.append(LineProblem(line, "id", f"{example_id!r} is already in the store"))
            if clash := _provider_clash(record["provider"], spellings, known):
                problems.append(LineProblem(line, "provider", clash))
            else:
                spellings.setdefault(provider_key(record["provider"]), record["provider"])
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers (and a crash) see the old file or the new one, never half of one. Created with the
    process umask, like every file dataworth writes."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def quarantine(validated: ValidatedShard, directory: Path) -> Path:
    """Copy a bad shard aside with its line report; returns the report's path.

    A shard over the size limit is not copied (the report says so): the original stays where it is.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{validated.shard.sha256[:12]}-{Path(validated.shard.name).name}"
    target = directory / stem
    if not validated.shard.oversized and not target.exists():
        _write_atomic(target, _read_bytes(validated.shard.url))
    report = directory / f"{stem}.problems.json"
    payload = {"shard": asdict(validated.shard), "copied": not validated.shard.oversized,
               "problems": [asdict(p) for p in validated.problems]}
    _write_atomic(report, json.dumps(payload, indent=2).encode())
    return report


def quarantined_hashes(directory: Path) -> set[str]:
    """Content hashes of the shards held in quarantine. A report that cannot be read (cut short by
    a crash before reports were written atomically) holds nothing: its shard is validated, and
    reported, again."""
    if not directory.is_dir():
        return set()
    held = set()
    for path in directory.glob("*.problems.json"):
        try:
            held.add(json.loads(path.read_text())["shard"]["sha256"])
        except (ValueError, KeyError, TypeError):
            continue
    return held
