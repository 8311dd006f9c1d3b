"""Tiny models built from configs for the proofs: small enough to invert, real enough to trust."""

import torch
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import PreTrainedTokenizerFast

from sample.model import GPT2Shape, build_gpt2, load_sample_corpus, train_tokenizer


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


def gpt2_style_tokenizer():
    """The sample model's byte-level tokenizer: bos = eos = <|endoftext|>, and it adds neither."""
    return train_tokenizer([e.display_text for e in load_sample_corpus()], vocab_size=300)


def llama_style_tokenizer(single="<s> $A"):
    """Stands in for a Llama tokenizer (add_bos_token): it puts its own <s> before every text and
    has an EOS </s> it does not add."""
    tok = gpt2_style_tokenizer()
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    tok._tokenizer.post_processor = TemplateProcessing(
        single=single, special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    return tok


def tokenizer_without_bos():
    return PreTrainedTokenizerFast(tokenizer_object=gpt2_style_tokenizer().backend_tokenizer, eos_token="<|endoftext|>")
