"""The README's library example runs: every ```python block of "The core as a library", in order,
in one namespace, in a fresh directory (it writes runs/...)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def library_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## The core as a library", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_library_example_runs(tmp_path, monkeypatch):
    blocks = library_blocks()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"README.md (library block {number})", "exec"), namespace)
