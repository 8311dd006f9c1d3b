"""Tiny models built from configs for the proofs: small enough to invert, real enough to trust."""

import torch
from torch import nn

from sample.model import GPT2Shape, build_gpt2


def tiny_gpt2(dtype=torch.float64, seed=0, vocab=48, n_embd=16, n_layer=2):
    shape = GPT2Shape(vocab_size=vocab, n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=2)
    return build_gpt2(shape, seed=seed, attn_implementation="eager").to(dtype).eval()


def tiny_mlp(dtype=torch.float64, seed=0, dims=(4, 3, 2)):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dims[0], dims[1]), nn.Tanh(), nn.Linear(dims[1], dims[2])).to(dtype)


def lm_batch(lengths, vocab=48, total=12, seed=1):
    """Right-padded causal-LM batch with the given true lengths; padding masked and labelled -100."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), total), generator=gen)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids * mask  # pad id 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "example_ids": [f"ex{i}" for i in range(len(lengths))]}


def classification_batch(n, d_in=4, n_classes=2, seed=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randn(n, d_in, generator=gen, dtype=dtype),
            "labels": torch.randint(0, n_classes, (n,), generator=gen)}
