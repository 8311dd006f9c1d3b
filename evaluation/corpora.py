"""Real text for the evaluation, installed from a package at eval time, written by nobody here.

Jane Austen's six novels (the texts are in the public domain), as shipped by the Debian package
`r-cran-janeaustenr` (Julia Silge's R package janeaustenr, MIT licence, text from Project
Gutenberg): `apt-get install r-cran-janeaustenr`. The package keeps each novel as a character
vector of lines in an R lazy-load database, `data/Rdata.rdx` (a gzip RDS index of offsets) and
`data/Rdata.rdb` (zlib blobs). It is read here with the PyPI package `rdata` (the `eval` extra):
no R at eval time.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from pathlib import Path

JANEAUSTENR_DATA = Path("/usr/lib/R/site-library/janeaustenr/data")
LICENCE_NOTE = ("Jane Austen's novels (public domain) from the Debian package r-cran-janeaustenr "
                "(janeaustenr by Julia Silge, MIT licence; text from Project Gutenberg)")
_CHAPTER = re.compile(r"^(chapter|volume)\b", re.IGNORECASE)


class CorpusUnavailableError(RuntimeError):
    """A corpus the evaluation reads from an installed package is not there."""


def janeaustenr_dir() -> Path:
    """Where the package's data lives: $DATAWORTH_JANEAUSTENR, else Debian's path."""
    return Path(os.environ.get("DATAWORTH_JANEAUSTENR", JANEAUSTENR_DATA))


def austen_novels(data_dir: Path | None = None) -> dict[str, list[str]]:
    """Every novel's lines, keyed by janeaustenr's object name (emma, persuasion, ...)."""
    data_dir = data_dir or janeaustenr_dir()
    index_path, blobs_path = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    if not (index_path.exists() and blobs_path.exists()):
        raise CorpusUnavailableError(
            f"the Jane Austen corpus is not installed ({index_path} missing): "
            "apt-get install r-cran-janeaustenr, or point DATAWORTH_JANEAUSTENR at its data/ directory"
        )
    try:
        import rdata
    except ImportError:
        raise CorpusUnavailableError(
            "reading the Jane Austen corpus needs rdata: pip install 'dataworth[eval]'"
        ) from None
    with warnings.catch_warnings():  # rdata warns that a lazy-load blob has no file header
        warnings.simplefilter("ignore")
        index = rdata.read_rds(index_path)
        blobs = blobs_path.read_bytes()
        novels = {}
        for name, (offset, length) in index["variables"].items():
            blob = blobs[int(offset): int(offset) + int(length)]
            # Each blob: 4-byte big-endian uncompressed size, then zlib data of a serialised R object.
            (size,) = struct.unpack(">I", blob[:4])
            raw = zlib.decompress(blob[4:])
            if len(raw) != size:
                raise CorpusUnavailableError(f"{blobs_path}: object {name} is damaged ({len(raw)} of {size} bytes)")
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw, extension="rds"))
            novels[str(name)] = [str(line) for line in lines]
    return novels


def paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, each joined into one line; chapter headings dropped."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = " ".join(current)
            if not _CHAPTER.match(text):
                out.append(text)
            current = []
    return out
