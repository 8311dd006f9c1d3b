"""How gradient rows are stored: a precision (what saves the bytes) and a byte codec behind it.

Dense gradients barely compress losslessly, so the bytes are saved by precision:
- bfloat16 (default): float32's exponent range, so it cannot overflow; <= 2^-8 relative error
  per element. Stored as uint16 bit patterns (numpy has no bfloat16).
- float16 with a per-row power-of-two scale: plain float16 overflows on unnormalised gradients;
  scaling each row's max-abs to below 2^15 keeps it finite and gives 2^-11 relative error for
  elements within 2^-29 of the row's max-abs (smaller ones lose relative precision).
- int8 with a per-row scale: <= 1/254 of the row's max-abs per element. A single global scale
  would flatten the small rows to zero.
- float32: lossless.
Decoding always returns float32; `widenable` hands the codes to torch as they are, for readers
that widen them in cache-sized pieces (the scoring scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
import zarr
from pydantic import BaseModel, ConfigDict, Field
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

Precision = Literal["bfloat16", "float16", "int8", "float32"]

STORAGE_DTYPES: dict[str, np.dtype] = {
    "bfloat16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
    "float32": np.dtype("<f4"),
}
SCALED = frozenset({"float16", "int8"})
AUX_CHUNK_ELEMENTS = 1 << 22  # 32 MiB of float64 per chunk
FLOAT16_TOP_EXPONENT = 15  # scaled row max-abs < 2^15 < 65504 (float16 max)
FLOAT16_TOP_CODE = np.float32(2**15 - 2**4)  # the largest float16 below 2^15


class CodecConfig(BaseModel):
    """Precision of the stored rows and the lossless byte codec behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Precision = Field(
        default="bfloat16",
        description="bfloat16 (16-bit, no overflow), float16 or int8 (per-row scale), float32 (lossless)",
    )
    cname: Literal["none", "zstd", "lz4", "blosclz", "zlib"] = Field(
        default="none",
        description="Blosc compressor behind the codes; none (default): the codes as they are. Blosc-zstd "
        "stores bfloat16 rows of real gradients in 0.73x the bytes, but decompressing them cost the scan "
        "more CPU than its matrix products (docs/benchmarks.md)",
    )
    clevel: int = Field(default=3, ge=0, le=9, description="Blosc compression level (with a Blosc cname)")
    shuffle: Literal["bitshuffle", "shuffle", "noshuffle"] | None = Field(
        default=None,
        description="Blosc shuffle filter; None: bitshuffle for 16/32-bit codes (it groups the exponent "
        "bits), none for int8 (bitshuffled int8 codes compressed worse: 1.0-1.1x vs 1.27x)",
    )

    @property
    def storage_dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.precision]

    @property
    def scaled(self) -> bool:
        return self.precision in SCALED

    @property
    def blosc_shuffle(self) -> Literal["bitshuffle", "shuffle", "noshuffle"]:
        if self.shuffle is not None:
            return self.shuffle
        return "noshuffle" if self.precision == "int8" else "bitshuffle"

    def compressors(self) -> list:
        """[Blosc], then a CRC32C per chunk so a damaged chunk fails loudly instead of decoding to noise."""
        if self.cname == "none":
            return [Crc32cCodec()]
        itemsize = self.storage_dtype.itemsize
        return [
            BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.blosc_shuffle, typesize=itemsize),
            Crc32cCodec(),
        ]


def aux_compressors() -> list:
    """For float64 sums, strings and counts: light Zstd, and the same per-chunk CRC32C as rows."""
    return [ZstdCodec(level=1), Crc32cCodec()]


def create_aux_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: np.dtype) -> zarr.Array:
    """An empty array for small whole values (sums, eigenvectors, per-row values), replacing any old one."""
    chunk_rows = max(1, min(shape[0], AUX_CHUNK_ELEMENTS // max(1, int(np.prod(shape[1:])))))
    return group.create_array(
        name, shape=shape, dtype=dtype, chunks=(chunk_rows, *shape[1:]), compressors=aux_compressors(), overwrite=True,
    )


def put_array(group: zarr.Group, name: str, data: np.ndarray) -> None:
    """Write a small whole array, replacing any old one."""
    array = create_aux_array(group, name, data.shape, data.dtype)
    if data.size:
        array[...] = data


@dataclass
class EncodedRows:
    """Rows as stored: codes in the storage dtype and, for scaled precisions, one scale per row."""

    codes: np.ndarray
    scale: np.ndarray | None

    def __len__(self) -> int:
        return self.codes.shape[0]

    def slice(self, start: int, stop: int) -> EncodedRows:
        return EncodedRows(self.codes[start:stop], None if self.scale is None else self.scale[start:stop])


def _encode_bfloat16(rows: np.ndarray) -> np.ndarray:
    bits = rows.view(np.uint32)
    # Round to nearest even on the 16 dropped bits (what torch and hardware do).
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    # A finite value within half an ulp of float32's max would round to inf: truncate it instead.
    overflow = (rounded & 0x7F80) == 0x7F80
    if overflow.any():
        rounded[overflow] = (bits[overflow] >> 16).astype(np.uint16)
    return rounded


def _decode_bfloat16(codes: np.ndarray) -> np.ndarray:
    return (codes.astype(np.uint32) << 16).view(np.float32)


def _max_abs(rows: np.ndarray) -> np.ndarray:
    if rows.shape[1] == 0:
        return np.zeros(rows.shape[0], dtype=np.float32)
    return np.abs(rows).max(axis=1)


def encode(rows: np.ndarray, precision: Precision) -> EncodedRows:
    """float32 rows (n x K, finite) to their stored form."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if precision == "float32":
        return EncodedRows(rows.copy(), None)
    if precision == "bfloat16":
        return EncodedRows(_encode_bfloat16(rows), None)
    max_abs = _max_abs(rows)
    if precision == "int8":
        scale = (max_abs / np.float32(127)).astype(np.float32)
        # Where 127 * scale rounded above max-abs, decoding could overflow to inf near float32's max.
        over = scale.astype(np.float64) * 127 > max_abs.astype(np.float64)
        scale[over] = np.nextafter(scale[over], np.float32(0))
        safe = np.where(scale > 0, scale, np.float32(1))
        codes = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
        return EncodedRows(codes, scale)
    # Power-of-two scale: dividing by it is exact, so the only error is float16 rounding.
    _, exponent = np.frexp(np.where(max_abs > 0, max_abs, np.float32(1)))
    exponent = np.maximum(exponent - FLOAT16_TOP_EXPONENT, -149)
    scale = np.ldexp(np.float32(1), exponent).astype(np.float32)
    # Rounding up to 2^15 would decode to 2^128 = inf for rows near float32's max; the largest
    # float16 below 2^15 is at most 2^-11 relative away, within the codec's error anyway.
    scaled = np.clip(rows / scale[:, None], -FLOAT16_TOP_CODE, FLOAT16_TOP_CODE)
    return EncodedRows(scaled.astype(np.float16), scale)


def decode(encoded: EncodedRows, precision: Precision) -> np.ndarray:
    """Stored rows back to float32."""
    codes = encoded.codes
    if precision == "float32":
        return np.asarray(codes, dtype=np.float32)
    if precision == "bfloat16":
        return _decode_bfloat16(codes)
    scale = cast(np.ndarray, encoded.scale)  # float16 and int8 always keep their per-row scale
    return codes.astype(np.float32) * scale[:, None]


def widenable(codes: np.ndarray, precision: Precision) -> torch.Tensor:
    """Stored codes as a tensor whose plain copy into float32 gives the decoded rows (times the
    per-row scale for scaled precisions). No copy here: bfloat16 bit patterns are viewed as
    torch.bfloat16, whose widening to float32 is the same 16-bit shift as `decode`."""
    if precision == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(codes).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(codes))
