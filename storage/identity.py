"""Refusing rows of another projection or another model, with a message naming both sides."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from valuation.spec import ProjectionSpec

from .errors import ModelMismatchError
from .schema import StoreAttributes


def model_id(fingerprint: dict[str, Any]) -> str:
    """The short fingerprint of valuation.fingerprint.model_fingerprint, or a hash of the dict."""
    if "fingerprint" in fingerprint:
        return str(fingerprint["fingerprint"])
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 20 else text[:16] + "..."


def model_differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted((expected.keys() | got.keys()) - {"fingerprint", "config"}):
        if expected.get(key) != got.get(key):
            diffs.append(f"{key}: {_short(expected.get(key))} vs {_short(got.get(key))}")
    config_a, config_b = expected.get("config") or {}, got.get("config") or {}
    for key in sorted(config_a.keys() | config_b.keys()):
        if config_a.get(key) != config_b.get(key):
            diffs.append(f"config.{key}: {_short(config_a.get(key))} vs {_short(config_b.get(key))}")
    return diffs


def check_compatible(attrs: StoreAttributes, spec: ProjectionSpec, model_fingerprint: dict[str, Any]) -> None:
    """Raise ProjectionMismatchError or ModelMismatchError unless rows logged under (spec, model) fit."""
    attrs.spec.check_compatible(spec, this="store", that="rows'")
    expected, got = model_id(attrs.model_fingerprint), model_id(model_fingerprint)
    if expected != got:
        diffs = model_differences(attrs.model_fingerprint, model_fingerprint)
        raise ModelMismatchError(f"store model {expected}", f"rows' model {got}", diffs)
