"""Every decoder family of docs/architectures.md, from a save_pretrained directory through LoGra:
the documented default selection, exact rows on a right-padded batch (embeddings and the LM
head included) and padding that changes nothing."""

import re
from pathlib import Path

import pytest
import torch

from valuation import CausalLMObjective, LoGra, ProjectionConfig
from valuation.kfac import kfac_covariances
from valuation.targets import select_modules

from .families import CONFIGS, VOCAB, load, save_tiny
from .models import lm_batch
from .test_logra_exact import per_example_lm_rows, relative_error

DOC = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"
REL_TOL = 1e-10


def documented_families() -> dict[str, dict]:
    """The default-selection table of docs/architectures.md, one dict per family."""
    text = DOC.read_text(encoding="utf-8")
    blocks = text.split("## Default selection", 1)[1].split("\n\n")
    table = next(block for block in blocks if block.lstrip().startswith("| family"))
    rows = table.strip().splitlines()[2:]
    families = {}
    for line in rows:
        family, cls, tracked, kind, width, embedding = (c.strip() for c in line.strip("|").split("|"))
        families[family] = {
            "class": cls.strip("`"),
            "tracked": re.findall(r"`([^`]+)`", tracked),
            "kind": kind,
            "width": int(width),
            "embedding": embedding.strip("`"),
        }
    return families


FAMILIES = documented_families()


def test_the_table_covers_every_tested_family():
    assert set(FAMILIES) == set(CONFIGS)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved(request, tmp_path_factory):
    family = request.param
    return family, save_tiny(family, tmp_path_factory.mktemp("models") / re.sub(r"\W+", "-", family))


def per_layer(name: str) -> tuple[int, str] | None:
    """(layer index, module name within the layer) for modules inside the repeated layers."""
    match = re.match(r".*?\.(?:h|layers)\.(\d+)\.(.+)$", name)
    return (int(match.group(1)), match.group(2)) if match else None


def test_default_selection_is_the_documented_one(saved):
    family, directory = saved
    model = load(directory)
    doc = FAMILIES[family]
    assert type(model).__name__ == doc["class"]
    with LoGra(model, ProjectionConfig(init="random")) as logra:
        layout = logra.layout
    layers = [per_layer(m.name) for m in layout.modules]
    assert None not in layers, "only modules inside the repeated layers are tracked by default"
    n_layers = CONFIGS[family].num_hidden_layers
    for layer in range(n_layers):
        assert [inner for index, inner in layers if index == layer] == doc["tracked"]
    assert {m.kind for m in layout.modules} == {doc["kind"]}
    assert layout.total == n_layers * doc["width"]


def batch_for_family():
    return lm_batch([12, 7, 3, 9], vocab=VOCAB)  # right-padded with id 0, the configs' pad id


def with_embedding_and_head(family):
    return ProjectionConfig(init="random", modules=["*", FAMILIES[family]["embedding"], "lm_head"], exclude=[],
                            rank_in=5, rank_out=4, seed=1)


def test_rows_of_a_padded_batch_equal_projected_per_example_gradients(saved):
    family, directory = saved
    model = load(directory)
    batch = batch_for_family()
    logra = LoGra(model, with_embedding_and_head(family))
    rows = logra.log_batch(batch).rows
    projections, layout = logra.projections(), logra.layout
    logra.remove()
    kinds = {m.name: m.kind for m in layout.modules}
    assert kinds[FAMILIES[family]["embedding"]] == "embedding" and kinds["lm_head"] == "linear"
    expected = per_example_lm_rows(model, batch, layout, projections, tie_weights=False)
    assert relative_error(rows, expected) < REL_TOL


def test_padding_changes_nothing(saved):
    family, directory = saved
    model = load(directory)
    lengths = [12, 7, 3, 9]
    batch = batch_for_family()
    with LoGra(model, with_embedding_and_head(family)) as logra:
        batched = logra.log_batch(batch).rows
        for i, n in enumerate(lengths):
            alone = {k: batch[k][i : i + 1, :n] for k in ("input_ids", "attention_mask", "labels")}
            torch.testing.assert_close(batched[i : i + 1], logra.log_batch(alone).rows, rtol=1e-10, atol=1e-10)


def test_pca_factors_ignore_padding(saved):
    """KFAC factors of the padded batch equal those of its examples fed one by one, unpadded."""
    family, directory = saved
    model = load(directory)
    batch = batch_for_family()
    targets = select_modules(model, with_embedding_and_head(family))
    alone = [{k: batch[k][i : i + 1, :n] for k in ("input_ids", "attention_mask", "labels")}
             for i, n in enumerate([12, 7, 3, 9])]
    padded = kfac_covariances(model, targets, [batch], CausalLMObjective())
    single = kfac_covariances(model, targets, alone, CausalLMObjective())
    for name in targets:
        for a, b in zip(padded[name], single[name]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
