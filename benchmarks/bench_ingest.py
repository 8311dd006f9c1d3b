"""Ingestion's memory: does it depend on the size of a shard, or the number of shards?

Peak RSS of logging one shard as the ingest task does (rows streamed into its staging group as
they are logged), and of then committing it, for shards of 2k and 20k short examples on a tiny GPT-2, beside
the same logging held in memory and committed whole (what ingestion did before) as the baseline:
a ratio 20k / 2k near 1 is flat, near 10 grows with the shard. And the bytes of the store's Fisher
sums (totals/) when the same rows arrive as 2, 8 or 32 shards: one running total, so flat. The
commit copies a staged shard in blocks of two chunks: its peak, measured alone on staged random
rows up to 60k, stops growing once a shard spans a few blocks.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sample.model import GPT2Shape, build_gpt2, train_tokenizer
from storage import GradientStore, RowMetadata
from storage.sink import ShardSink
from valuation import FisherConfig, FisherPartial, LoGra, ProjectionConfig
from valuation.data import Example
from valuation.fingerprint import model_fingerprint
from valuation.pipeline import LoggingOptions, iter_logged, log_examples
from valuation.sink import LogSession

from .measure import peak_memory_bytes

WORDS = ("river", "stone", "cloud", "market", "lantern", "garden", "winter", "signal", "harbor", "meadow",
         "copper", "engine", "violet", "thunder", "archive", "orchard")
FISHER = FisherConfig(estimator="empirical")  # memory does not depend on the estimator; one backward pass is cheaper


class IngestBenchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    examples: tuple[int, ...] = (2_000, 20_000)
    shard_counts: tuple[int, ...] = (2, 8, 32)
    fisher_rows: int = Field(default=4_096, ge=32, description="rows split into shard_counts shards")
    commit_rows: tuple[int, ...] = Field(default=(2_000, 20_000, 60_000), description="staged shards of random "
                                         "rows whose commit alone is measured: where its peak stops growing")
    n_embd: int = 32
    rank: int = 16  # 16 x 16 on the 8 linear modules of a 2-layer GPT-2: rows of 2,048 values
    batch: int = 16


def short_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [Example(id=f"ex-{seed}-{i}", provider=f"provider-{i % 4}",
                    text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))) for i in range(n)]


def _shard_hash(examples: list[Example]) -> str:
    return hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()


def _store(url: Path, logra: LoGra, fingerprint: dict) -> GradientStore:
    return GradientStore.create(str(url), logra.spec, fingerprint, fisher=FISHER)


def _stream(url: Path, logra: LoGra, tokenizer, fingerprint: dict, examples: list[Example],
            options: LoggingOptions) -> None:
    """What tasks.ingest.log_shard does: stream the rows into a staging group."""
    store = _store(url, logra, fingerprint)
    sink = ShardSink(store, _shard_hash(examples), providers={e.id: e.provider or "" for e in examples},
                     snippets={e.id: e.display_text for e in examples})
    sink.open(LogSession(logra.spec, fingerprint, {}, FISHER))
    for logged in iter_logged(logra, tokenizer, examples, options, fisher=FISHER):
        sink.write(logged)
    sink.close()


def _commit_staged(url: Path, examples: list[Example]) -> None:
    """... and then: publish the staged shard."""
    GradientStore.open(str(url)).commit_staged([_shard_hash(examples)])


def _in_memory(url: Path, logra: LoGra, tokenizer, fingerprint: dict, examples: list[Example],
               options: LoggingOptions) -> None:
    """Ingestion before streaming: every row of the shard in memory, then one commit."""
    store = _store(url, logra, fingerprint)
    logged = log_examples(logra, tokenizer, examples, options, fisher=FISHER)
    metadata = RowMetadata(logged.ids, [e.provider or "" for e in examples], logged.n_tokens,
                           [e.display_text for e in examples])
    store.commit_shard(_shard_hash(examples), logged.rows, metadata, logged.fisher, spec=logra.spec,
                       model_fingerprint=fingerprint, fisher=FISHER)


def _staged_random(url: Path, logra: LoGra, fingerprint: dict, n: int) -> str:
    """A staged shard of n random rows, written 1,000 rows at a time (no model: only the commit is measured)."""
    store = _store(url, logra, fingerprint)
    writer = store.stage("bench", spec=logra.spec, model_fingerprint=fingerprint, fisher=FISHER).open_shard("random")
    partial, rng = FisherPartial.zeros(logra.layout), np.random.default_rng(n)
    for a in range(0, n, 1_000):
        rows = rng.standard_normal((min(1_000, n - a), logra.layout.total)).astype(np.float32)
        ids = [f"row-{i}" for i in range(a, a + len(rows))]
        writer.append(rows, RowMetadata(ids, ["provider-0"] * len(rows), np.full(len(rows), 8),
                                        ["a short text"] * len(rows)))
        partial.update(torch.from_numpy(rows))
    writer.finish(partial)
    return "random"


def _bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fisher_bytes(config: IngestBenchConfig, workdir: Path, logra: LoGra, fingerprint: dict) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((config.fisher_rows, logra.layout.total)).astype(np.float32)
    ids = [f"row-{i}" for i in range(config.fisher_rows)]
    out = []
    for shards in config.shard_counts:
        url = workdir / f"fisher-{shards}.zarr"
        store = _store(url, logra, fingerprint)
        for part in np.array_split(np.arange(config.fisher_rows), shards):
            a, b = int(part[0]), int(part[-1]) + 1
            meta = RowMetadata(ids[a:b], [f"provider-{i % 4}" for i in range(a, b)], np.full(b - a, 8))
            store.commit_shard(hashlib.sha256(f"{a}-{b}".encode()).hexdigest(), rows[a:b], meta,
                               spec=logra.spec, model_fingerprint=fingerprint, fisher=FISHER)
        out.append({"shards": shards, "rows": config.fisher_rows, "totals_bytes": _bytes_under(url / "totals"),
                    "store_bytes": _bytes_under(url)})
    for r in out:
        r["totals_vs_fewest"] = r["totals_bytes"] / out[0]["totals_bytes"]
    return out


def bench_ingest(config: IngestBenchConfig, workdir: Path) -> dict:
    device = torch.device("cpu")
    corpus = short_examples(500, seed=99)
    tokenizer = train_tokenizer([e.text or "" for e in corpus], vocab_size=320)
    model = build_gpt2(GPT2Shape(vocab_size=len(tokenizer), n_positions=64, n_embd=config.n_embd, n_layer=2,
                                 n_head=2), pad_id=tokenizer.pad_token_id)
    fingerprint = model_fingerprint(model)
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=config.rank, rank_out=config.rank))
    options = LoggingOptions(batch_size=config.batch, max_length=64)
    try:
        warm = short_examples(4 * config.batch, seed=1)  # imports, thread pools, codec buffers: not the shard's
        _stream(workdir / "warm-streamed.zarr", logra, tokenizer, fingerprint, warm, options)
        _commit_staged(workdir / "warm-streamed.zarr", warm)
        _in_memory(workdir / "warm-in-memory.zarr", logra, tokenizer, fingerprint, warm, options)
        peaks: dict[str, dict[int, int | None]] = {"logging": {}, "commit": {}, "in_memory": {}}
        for n in config.examples:
            examples = short_examples(n, seed=n)
            args = (logra, tokenizer, fingerprint, examples, options)
            streamed, in_memory = workdir / f"streamed-{n}.zarr", workdir / f"in-memory-{n}.zarr"
            peaks["logging"][n] = peak_memory_bytes(lambda: _stream(streamed, *args), device)  # noqa: B023
            peaks["commit"][n] = peak_memory_bytes(lambda: _commit_staged(streamed, examples), device)  # noqa: B023
            peaks["in_memory"][n] = peak_memory_bytes(lambda: _in_memory(in_memory, *args), device)  # noqa: B023
        commit_peaks = {}
        for n in config.commit_rows:
            url = workdir / f"commit-{n}.zarr"
            shard = _staged_random(url, logra, fingerprint, n)
            commit_peaks[str(n)] = peak_memory_bytes(lambda: GradientStore.open(str(url)).commit_staged([shard]),  # noqa: B023
                                                     device)
        fisher = _fisher_bytes(config, workdir, logra, fingerprint)
    finally:
        logra.remove()
    small, large = config.examples[0], config.examples[-1]
    ratios = {name: (p[large] / p[small] if p[large] and p[small] else None) for name, p in peaks.items()}
    return {"row_width": logra.layout.total, "examples": list(config.examples),
            "peak_bytes": {name: {str(n): v for n, v in p.items()} for name, p in peaks.items()},
            "peak_ratio_largest_vs_smallest": ratios, "commit_peak_bytes": commit_peaks, "fisher": fisher}
