"""The prepared GPU check: logging and scoring on one CUDA device in under five minutes.

    python -m benchmarks.gpu_check                       # on a machine with a GPU
    python -m benchmarks.gpu_check --device cpu --tiny   # the same code at toy sizes (CI smoke test)

Logging: a plain forward+backward against LoGra and LoGra + the sampled-label Fisher, bfloat16
autocast, GPT-2 configs of 4 and 6 layers, batches of 8 x 256 tokens. Scoring: 1M stored bfloat16
rows of width 1,024 against 64 and 256 queries, the tiles multiplied on the GPU, against an
in-memory float32 matrix product on the same GPU. Writes bench.json and bench.md to --out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import run

PREPARED = ["--sizes", "gpt2-128x4", "gpt2-256x6", "--batch", "8", "--seq", "256", "--rows", "1000000",
            "--queries", "64", "256", "--repeats", "5"]
TINY = ["--sizes", "gpt2-64x2", "--batch", "2", "--seq", "16", "--rows", "4096", "--queries", "8",
        "--repeats", "1"]


def arguments(device: str, out: Path, tiny: bool) -> list[str]:
    """The benchmarks.run command line of the check."""
    threads = str(min(8, os.cpu_count() or 1))
    return ["--only", "logging", "scoring", "--autocast", "bfloat16", "--no-dense", "--threads", threads,
            "--device", device, "--out", str(out), *(TINY if tiny else PREPARED)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=Path("gpu-results"), help="default: %(default)s")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    run.main(arguments(args.device, args.out, args.tiny))


if __name__ == "__main__":
    main()
