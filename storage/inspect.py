"""What is in a store (`dataworth store info`) and whether it is intact (`dataworth store verify`).

Both return data (the CLI prints it); format_info renders store_info's dict for a terminal.
"""

from __future__ import annotations

from typing import Any

import zarr

from .identity import model_id
from .location import stored_bytes
from .rows import RowArrays
from .schema import ROW_SCALE, ROWS, SNAPSHOTS, TOTALS
from .snapshots import snapshot_attrs
from .staging import list_staged
from .store import GradientStore
from .verify import verify_store

__all__ = ["format_info", "store_info", "verify_store"]


def store_info(url: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts, sizes, providers, shards, snapshots and staged work of the store at `url`."""
    store = GradientStore.open(url, read_only=True, storage_options=storage_options)
    root = store.root()
    attrs, n, width = store.attributes, store.n_rows, store.layout.total
    rows_bytes = stored_bytes(root.store, ROWS)
    if store.codec.scaled:
        rows_bytes += stored_bytes(root.store, ROW_SCALE)
    config = attrs.projection_spec["config"]
    return {
        "url": store.url,
        "schema_version": attrs.schema_version,
        "created_at": attrs.created_at,
        "code_version": attrs.code_version,
        "model": {
            "fingerprint": model_id(attrs.model_fingerprint),
            "architecture": attrs.model_fingerprint.get("architecture"),
        },
        "projection": {
            "fingerprint": store.spec.fingerprint,
            **{key: config[key] for key in ("rank_in", "rank_out", "init", "seed")},
            "modules": len(store.layout.modules),
            "width": width,
        },
        # What else fixes the rows' meaning: a run asking for another Fisher or BOS/EOS is refused.
        "fisher": attrs.fisher,
        "calibration": attrs.calibration,  # what a PCA projection was fitted on
        "encoding": attrs.encoding,  # None: made before it was recorded, with the tokenizer's own tokens
        "codec": {**store.codec.model_dump(), "shuffle": store.codec.blosc_shuffle},
        "chunk_rows": store.chunk_rows,
        "rows": n,
        "uncommitted_tail_rows": RowArrays.of(root).rows.shape[0] - n,
        "bytes": {
            "total": stored_bytes(root.store),
            "rows": rows_bytes,
            "totals": stored_bytes(root.store, TOTALS),
            "snapshots": stored_bytes(root.store, SNAPSHOTS),
            "per_row": rows_bytes / n if n else None,
            "ratio_vs_float32": n * width * 4 / rows_bytes if n and rows_bytes else None,
        },
        "providers": store.provider_row_counts(),
        "shards": [
            {"hash": e.shard_hash, "name": e.name, "rows": e.row_count, "row_start": e.row_start,
             "row_stop": e.row_stop, "committed_at": e.committed_at}
            for e in store.manifest
        ],
        "snapshots": [_snapshot_summary(root, version) for version in store.snapshot_versions()],
        "staged": [{"worker": s.worker_id, "shard_hash": s.shard_hash, "rows": s.n_rows}
                   for s in list_staged(root, attrs)],
    }


def _snapshot_summary(root: zarr.Group, version: int) -> dict[str, Any]:
    attrs = snapshot_attrs(root, version)
    derived = attrs.get("derived")
    return {
        "version": version, "created_at": attrs["created_at"], "count": attrs["count"], "alpha": attrs["alpha"],
        "shards": len(attrs["shards"]), "self_influence_rows": derived["rows"] if derived else None,
        "retired_at": attrs.get("retired_at"),
    }


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} GB"


def _byte_codec(codec: dict) -> str:
    if codec["cname"] == "none":
        return "CRC32C (no Blosc)"
    return f"blosc-{codec['cname']}/{codec['shuffle']} level {codec['clevel']} + CRC32C"


def _fisher(fisher: dict[str, Any]) -> str:
    settings = ", ".join(f"{key} {value}" for key, value in fisher.items() if key != "estimator")
    return f"estimator {fisher['estimator']}" + (f" ({settings})" if settings else "")


def _calibration(calibration: dict[str, Any] | None, init: str) -> str:
    if calibration is None:
        return "none (random init)" if init == "random" else "not recorded (made before it was)"
    # The flows record the shards and a hash of the examples' content; the library (valuation.sink)
    # a hash of their ids.
    shards = f" of {len(calibration['shards'])} shard(s)" if "shards" in calibration else ""
    digest = calibration.get("sha256") or calibration.get("example_ids_sha256") or ""
    return f"PCA fitted on {calibration['examples']:,} examples{shards}, sha256 {digest[:16]}"


def _encoding(encoding: dict[str, Any] | None) -> str:
    if encoding is None:
        return "the tokenizer's own special tokens (not recorded: made before bos/eos were settings)"
    parts = ", ".join(f"{part} {' '.join(tokens) or '-'}" for part, tokens in encoding["special_tokens"].items())
    return f"bos {encoding['bos']}, eos {encoding['eos']}: {parts}"


def format_info(info: dict[str, Any]) -> str:
    """store_info's dict as a few lines for a terminal."""
    size, codec, proj = info["bytes"], info["codec"], info["projection"]
    rows = f"{info['rows']:,} committed"
    if info["uncommitted_tail_rows"]:
        rows += f", {info['uncommitted_tail_rows']:,} uncommitted (a crashed commit's; the next commit drops them)"
    sizes = f"{_bytes(size['total'])} in all; rows {_bytes(size['rows'])}"
    if size["per_row"]:
        sizes += f" ({size['per_row']:,.0f} B/row, {size['ratio_vs_float32']:.2f}x smaller than float32)"
    sizes += f"; Fisher and provider totals {_bytes(size['totals'])}; snapshots {_bytes(size['snapshots'])}"
    lines = [
        f"store      {info['url']}",
        f"           schema {info['schema_version']}, created {info['created_at']}, dataworth {info['code_version']}",
        f"model      {info['model']['fingerprint']} ({info['model']['architecture']})",
        f"projection {proj['fingerprint']}: {proj['modules']} modules, width {proj['width']}, "
        f"rank {proj['rank_out']}x{proj['rank_in']}, {proj['init']} init, seed {proj['seed']}",
        f"fisher     {_fisher(info['fisher'])}",
        f"calibrated {_calibration(info['calibration'], proj['init'])}",
        f"tokens     {_encoding(info['encoding'])}",
        f"codec      {codec['precision']} + {_byte_codec(codec)}, {info['chunk_rows']:,} rows per chunk",
        f"rows       {rows}",
        f"size       {sizes}",
        f"providers  {len(info['providers'])}",
        *(f"  {name:<24} {count:>10,} rows" for name, count in info["providers"].items()),
        f"shards     {len(info['shards'])}",
        *(f"  {s['hash'][:16]:<16} {s['name'] or '':<24} {s['rows']:>10,} rows  {s['committed_at']}"
          for s in info["shards"]),
        f"snapshots  {len(info['snapshots'])}",
    ]
    for s in info["snapshots"]:
        covered = "-" if s["self_influence_rows"] is None else f"{s['self_influence_rows']:,} rows"
        if s["retired_at"]:
            covered = f"retired {s['retired_at']}"
        lines.append(
            f"  v{s['version']}: {s['count']:,} rows from {s['shards']} shards, alpha {s['alpha']}, "
            f"self-influence {covered}, {s['created_at']}"
        )
    if info["staged"]:
        lines.append(f"staged     {len(info['staged'])} shard(s) waiting for commit_staged()")
    return "\n".join(lines)
