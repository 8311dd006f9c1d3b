"""The bundled sample corpus and the tiny GPT-2 trained on it, for the demo and the tests.

Only paths here, so naming the sample data costs no import of torch or transformers.
"""

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent
SHARDS_DIR = SAMPLE_DIR / "shards"
QUERIES_PATH = SAMPLE_DIR / "queries.jsonl"
