"""One tiny config per decoder family the paper used (and one more), saved and loaded the way a
user's checkpoint is: save_pretrained into a directory, from_pretrained back. No downloads.

Every width is at least 16, so LoGra's default rank 16 is not capped and row widths equal those
of the real checkpoints per layer (docs/architectures.md).
"""

import copy
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    Qwen2Config,
)

VOCAB = 48
SMALL = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}

CONFIGS: dict[str, PretrainedConfig] = {
    "GPT-2": GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, **SMALL),
    "GPT-NeoX / Pythia": GPTNeoXConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=32, rotary_pct=0.5, **SMALL),
    "Llama": LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=32, max_position_embeddings=32, **SMALL),
    "Qwen2": Qwen2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=32, max_position_embeddings=32, **SMALL),
    "OPT": OPTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
                     max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.0, **SMALL),
}


def save_tiny(family: str, directory: Path, seed: int = 0, tokenizer=None) -> Path:
    """A randomly initialised tiny model of `family`, written with save_pretrained; with a
    `tokenizer`, sized for it (vocabulary, 256 positions) and saved beside it, as a checkpoint is."""
    config = copy.deepcopy(CONFIGS[family])
    if tokenizer is not None:
        config.vocab_size = len(tokenizer)
        config.max_position_embeddings = 256
        tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def load(directory: Path, dtype=torch.float64):
    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="eager").eval()
