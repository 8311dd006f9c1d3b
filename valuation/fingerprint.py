"""The identity of a model: gradients and scores are only comparable under the same weights.

The fingerprint covers the architecture, the config and every weight byte, and nothing that
changes without changing the function the model computes: LoGra add-ons (zero at injection,
and removed again), the transformers version, where the model was loaded from, or the config's
record of the dtype (the weight bytes carry it).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from .layers import ADDON, attached_adapters

VOLATILE_CONFIG_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "_commit_hash", "architectures", "dtype", "torch_dtype"}
)


def _config_essentials(model: nn.Module) -> dict | None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_diff_dict"):
        return None
    return {k: v for k, v in config.to_diff_dict().items() if k not in VOLATILE_CONFIG_KEYS}


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without any LoGra add-on's tensors."""
    prefixes = tuple(f"{name}.{ADDON}." if name else f"{ADDON}." for name in attached_adapters(model))
    return {key: tensor for key, tensor in model.state_dict().items() if not key.startswith(prefixes)}


def weights_sha256(model: nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor of the base model, by name."""
    digest = hashlib.sha256()
    state = _base_state(model)
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Through uint8 so every dtype hashes, bfloat16 included (numpy has none).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> dict:
    """architecture, config (transformers models), weights_sha256 and a short fingerprint of all three."""
    summary = {
        "architecture": type(model).__name__,
        "config": _config_essentials(model),
        "weights_sha256": weights_sha256(model),
    }
    payload = json.dumps(summary, sort_keys=True, default=str).encode()
    return {**summary, "fingerprint": hashlib.sha256(payload).hexdigest()[:16]}
