"""PCA initialisation for every registered module type: KFAC factors from the right inputs."""

import torch
import torch.nn.functional as F

from valuation import CausalLMObjective, ClassificationObjective, LoGra, ProjectionConfig
from valuation.kfac import kfac_covariances
from valuation.targets import select_modules

from .test_logra_exact import BagOfEmbeddings, TinyCNN


def cnn_batch():
    gen = torch.Generator().manual_seed(6)
    return {"inputs": torch.randn(5, 2, 6, 6, generator=gen, dtype=torch.float64),
            "labels": torch.randint(0, 3, (5,), generator=gen)}


def patches_by_loops(x, conv):
    """Every receptive field of `conv` over x (batch x C x H x W), sliced out one by one."""
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    rows = []
    for i in range(0, x.shape[2] - kh + 1, sh):
        for j in range(0, x.shape[3] - kw + 1, sw):
            rows.append(x[:, :, i : i + kh, j : j + kw].reshape(x.shape[0], -1))
    return torch.cat(rows)


def test_kfac_input_factor_of_a_convolution_is_the_covariance_of_its_patches():
    torch.manual_seed(5)
    model = TinyCNN().to(torch.float64)
    batch = cnn_batch()
    inputs = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, a, o, n=n: inputs.__setitem__(n, a[0].detach()))
             for n in ("conv1", "conv2")]
    model(batch["inputs"])
    for h in hooks:
        h.remove()
    targets = select_modules(model, ProjectionConfig())
    covs = kfac_covariances(model, targets, [batch], ClassificationObjective())
    for name in ("conv1", "conv2"):
        patches = patches_by_loops(inputs[name], getattr(model, name))
        torch.testing.assert_close(covs[name][0], patches.T @ patches / 5, rtol=1e-12, atol=1e-12)


def test_pca_of_an_embedding_keeps_its_most_frequent_tokens_never_the_padding_id():
    torch.manual_seed(3)
    model = BagOfEmbeddings().to(torch.float64)
    ids = torch.tensor([[3, 3, 3, 5, 5, 0, 0, 0], [3, 7, 7, 5, 0, 0, 0, 0]])  # 3: x4, 5: x3, 7: x2, padding: x7
    batch = {"inputs": ids, "labels": torch.tensor([0, 1])}
    logra = LoGra.with_pca(model, ProjectionConfig(modules=["embed"], rank_in=3, rank_out=2), [batch],
                           ClassificationObjective())
    p_in, p_out = logra.projections()["embed"]
    logra.remove()
    assert p_in.shape == (3, 11) and p_in.argmax(dim=1).tolist() == [3, 5, 7]
    torch.testing.assert_close(p_in @ p_in.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(p_out @ p_out.T, torch.eye(2, dtype=torch.float64))


def test_full_rank_pca_of_a_convolution_keeps_gradient_norms():
    """Orthonormal and complete on both sides: the projection is a rotation of the gradient."""
    torch.manual_seed(5)
    model = TinyCNN().to(torch.float64)
    batch = cnn_batch()
    config = ProjectionConfig(modules=["conv1"], rank_in=18, rank_out=3)
    logra = LoGra.with_pca(model, config, [batch], ClassificationObjective())
    rows = logra.log_batch(batch, ClassificationObjective()).rows
    logra.remove()
    objective = ClassificationObjective()
    norms = []
    for i in range(5):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        (g,) = torch.autograd.grad(objective.losses(model(one["inputs"]), one).sum(), [model.conv1.weight])
        norms.append(g.norm())
    torch.testing.assert_close(rows.norm(dim=1), torch.stack(norms), rtol=1e-10, atol=1e-12)


def test_a_sketched_factor_gives_the_dense_top_eigenvectors_when_its_rank_fits_the_sketch():
    from valuation.projection import pca_projection, sketched_pca_projection

    gen = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(300, 12, generator=gen, dtype=torch.float64))[0]
    cov = basis @ torch.diag(torch.linspace(10.0, 1.0, 12, dtype=torch.float64)) @ basis.T  # rank 12
    omega = torch.randn(300, 20, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(sketched_pca_projection(omega, cov @ omega, 5), pca_projection(cov, 5),
                               rtol=0, atol=1e-8)


def test_an_lm_head_wider_than_the_dense_limit_is_sketched_never_built(monkeypatch):
    """The vocabulary side of an LM head: d_out x d_out is never allocated; with fewer tokens than
    sketch columns the factor's rank fits the sketch and the projection is the dense one."""
    from valuation import kfac
    from valuation.logra import pca_projections

    from .models import lm_batch, tiny_gpt2

    model, batch = tiny_gpt2(), lm_batch([5, 3])  # 6 predicted tokens: rank <= 6 < 4 + 16 columns
    config = ProjectionConfig(modules=["lm_head"], exclude=[], rank_in=4, rank_out=4)
    dense = pca_projections(model, config, [batch])
    monkeypatch.setattr(kfac, "DENSE_FACTOR_MAX", 16)  # the head's 48 outputs are now "too wide"
    covs = kfac.kfac_covariances(model, select_modules(model, config), [batch], CausalLMObjective(),
                                 ranks_out={"lm_head": 4})
    assert isinstance(covs["lm_head"][1], kfac.FactorSketch) and covs["lm_head"][1].y.shape == (48, 20)
    sketched = pca_projections(model, config, [batch])
    torch.testing.assert_close(sketched["lm_head"][1], dense["lm_head"][1], rtol=0, atol=1e-8)
    torch.testing.assert_close(sketched["lm_head"][0], dense["lm_head"][0], rtol=0, atol=0)
