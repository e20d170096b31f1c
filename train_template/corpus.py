"""Token corpora as the harness sees them: splits, evaluation rows, and a verified disk cache.

A split is a 1-D token array plus the positions where a row may start: each start is a
document boundary token (the previous document's end mark, or a BOS), which is the first
input of a row and is never scored, so every scored token is predicted from its document's
true beginning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(Exception):
    """Bad or missing data: the message names the file or source and what to do."""


class UsageError(Exception):
    """Bad command-line input: unknown profile, bad flag value, missing file."""


class JudgedFailure(Exception):
    """The harness judged the candidate: status "crash" or "invalid", with a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Split:
    tokens: np.ndarray   # 1-D integer token ids (a memmap is fine)
    starts: np.ndarray   # 1-D int64: positions of document-boundary tokens, ascending


@dataclass(frozen=True)
class Corpus:
    """A data source, loaded lazily so val/test are only read after training returns."""

    name: str
    vocab_size: int
    token_bytes: np.ndarray                    # UTF-8 bytes each token id stands for (0: special)
    load_split: Callable[[str], Split]         # "train" | "val" | "test"
    floor_bpb: Callable[[np.ndarray, np.ndarray], float] | None = None  # (rows, score_from) -> bpb


def eval_rows(split: Split, seq_len: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of seq_len+1 tokens, each starting at a document boundary, scoring each token once.

    Returns (rows int64 [N, seq_len+1], score_from int64 [N]): in row i, target j (token j+1)
    is scored iff j >= score_from[i]. A row starts at the last boundary inside the previous
    row, so a document that continues is re-read as context and only its new tokens score;
    the tail of a document longer than a row is skipped. Stops after max_tokens scored.
    """
    tokens, starts = split.tokens, np.asarray(split.starts, dtype=np.int64)
    n = len(tokens)
    rows: list[np.ndarray] = []
    score_from: list[int] = []
    scored_until = -1  # last stream position already scored
    scored = 0
    k = 0  # index into starts of the current row start
    while k < len(starts) and starts[k] + seq_len < n and scored < max_tokens:
        pos = int(starts[k])
        first = max(0, scored_until - pos)  # targets at stream positions <= scored_until are done
        if first >= seq_len:
            k += 1
            continue
        rows.append(np.asarray(tokens[pos : pos + seq_len + 1], dtype=np.int64))
        score_from.append(first)
        scored += seq_len - first
        scored_until = pos + seq_len
        # next row: the last boundary inside this row (after pos), else the first one beyond it
        nxt = int(np.searchsorted(starts, pos + seq_len, side="right"))
        k = nxt - 1 if nxt - 1 > k else nxt
    if not rows:
        raise DataError(
            f"split too small for evaluation: need a document boundary followed by "
            f"{seq_len + 1} tokens, have {n} tokens"
        )
    return np.stack(rows), np.asarray(score_from, dtype=np.int64)


# ---- cache: files plus a manifest of their hashes, written atomically -------------------

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_manifest(directory: Path, files: list[str], meta: dict) -> None:
    """Record the hash of every cache file; written last, so its presence means complete."""
    entry = {"files": {name: sha256_file(directory / name) for name in files}, "meta": meta}
    atomic_write_bytes(directory / MANIFEST, json.dumps(entry, indent=1, sort_keys=True).encode())


def check_manifest(directory: Path) -> dict | None:
    """The manifest's meta if every listed file exists with its recorded hash, else None."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())
        for name, digest in entry["files"].items():
            if not (directory / name).exists() or sha256_file(directory / name) != digest:
                return None
        return entry["meta"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
