"""The built-in data sources, `synthetic` and `text:<path>`: byte tokens, cached and verified.

Each builds its splits once into a directory under the cache dir, holding a file lock so
that several workers on one node can ask at the same time, and writes a manifest of file
hashes last; a missing or corrupt cache is noticed by the manifest check and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from corpus import (
    Corpus,
    DataError,
    Split,
    atomic_write_bytes,
    check_manifest,
    eval_rows,
    write_manifest,
)
from filelock import FileLock
from synthlang import END, Language, LanguageSpec

FORMAT = 1
SPLITS = ("train", "val", "test")
BYTE_VOCAB = 256
BYTE_TOKEN_BYTES = np.ones(BYTE_VOCAB, dtype=np.int64)


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _rows_digest(rows: np.ndarray, score_from: np.ndarray) -> str:
    return hashlib.sha256(rows.astype(np.int64).tobytes() + score_from.tobytes()).hexdigest()


def _write_split(directory: Path, name: str, data: bytes, starts: np.ndarray) -> list[str]:
    atomic_write_bytes(directory / f"{name}.bin", data)
    atomic_write_bytes(directory / f"{name}.starts.bin", starts.astype(np.int64).tobytes())
    return [f"{name}.bin", f"{name}.starts.bin"]


def _reader(directory: Path):
    def load_split(name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r} (known: {', '.join(SPLITS)})")
        try:
            tokens = np.fromfile(directory / f"{name}.bin", dtype=np.uint8)
            starts = np.fromfile(directory / f"{name}.starts.bin", dtype=np.int64)
        except OSError as exc:
            raise DataError(f"data cache {directory} is incomplete ({exc}); run prepare again") from exc
        return Split(tokens=tokens, starts=starts)

    return load_split


def _build_locked(directory: Path, build) -> dict:
    """Return the cache's meta, building it first (under a lock) if missing or corrupt."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        meta = check_manifest(directory)
        if meta is None:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "manifest.json").unlink(missing_ok=True)
            files, meta = build(directory)
            write_manifest(directory, files, meta)
    return meta


# ---- synthetic -------------------------------------------------------------------------

def synthetic_sizes(train_tokens: int, val_tokens: int, seq_len: int) -> dict[str, int]:
    """Bytes per split: eval skips the tails of long documents, so val/test get slack."""
    eval_bytes = 3 * val_tokens + 4 * seq_len
    return {"train": train_tokens, "val": eval_bytes, "test": eval_bytes}


def load_synthetic(cache_dir: Path, *, train_tokens: int, val_tokens: int, seq_len: int,
                   spec: LanguageSpec | None = None) -> Corpus:
    spec = spec or LanguageSpec()
    sizes = synthetic_sizes(train_tokens, val_tokens, seq_len)
    directory = cache_dir / f"synthetic-{_key({'format': FORMAT, 'spec': asdict(spec), 'sizes': sizes})}"

    def build(d: Path):
        language = Language(spec)
        files: list[str] = []
        for i, name in enumerate(SPLITS):
            text = language.sample_stream(sizes[name], seed=spec.seed * 1000 + i)
            data = text.encode("ascii")
            starts = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord(END))
            files += _write_split(d, name, data, starts)
        rows, first = eval_rows(_reader(d)("val"), seq_len, val_tokens)
        floor = {"rows": _rows_digest(rows, first), "val_bpb": language.floor_bpb(rows, first)}
        return files, {"spec": asdict(spec), "sizes": sizes, "floor": floor}

    meta = _build_locked(directory, build)

    def floor_bpb(rows: np.ndarray, score_from: np.ndarray) -> float:
        if _rows_digest(rows, score_from) == meta["floor"]["rows"]:
            return float(meta["floor"]["val_bpb"])
        return Language(spec).floor_bpb(rows, score_from)

    return Corpus(name="synthetic", vocab_size=BYTE_VOCAB, token_bytes=BYTE_TOKEN_BYTES,
                  load_split=_reader(directory), floor_bpb=floor_bpb)


# ---- text:<path> -----------------------------------------------------------------------

def _text_documents(path: Path) -> list[bytes]:
    if not path.exists():
        raise DataError(f"text path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    docs: list[bytes] = []
    for f in files:
        raw = f.read_bytes().replace(b"\r\n", b"\n")
        paragraphs = [p.strip(b"\n") for p in raw.split(b"\n\n")]
        docs += [p for p in paragraphs if p.strip()]
    if len(docs) < 20:  # few paragraphs: split at lines instead, so val and test get documents
        docs = [line for d in docs for line in d.split(b"\n") if line.strip()]
    if not docs:
        raise DataError(f"text path {path} holds no text")
    return docs


def load_text(cache_dir: Path, path: str, *, seq_len: int) -> Corpus:
    """Documents are paragraphs (or lines); every 20th goes to val, the next to test."""
    src = Path(path).expanduser().resolve()
    docs = _text_documents(src)
    digest = hashlib.sha256(b"\0".join(docs)).hexdigest()[:16]
    directory = cache_dir / f"text-{digest}"
    parts: dict[str, list[bytes]] = {name: [b"\n"] for name in SPLITS}
    for i, doc in enumerate(docs):
        name = "val" if i % 20 == 0 else "test" if i % 20 == 1 else "train"
        parts[name].append(doc + b"\n")
    for name in SPLITS:
        size = sum(len(p) for p in parts[name])
        if size < seq_len + 1:
            raise DataError(
                f"text at {src} is too small: its {name} split has {size} bytes, "
                f"need more than {seq_len} (about {20 * (seq_len + 1)} bytes of text in all)"
            )

    def build(d: Path):
        files: list[str] = []
        for name in SPLITS:
            ends = np.cumsum([len(p) for p in parts[name]]) - 1  # each document's end mark
            files += _write_split(d, name, b"".join(parts[name]), ends.astype(np.int64))
        return files, {"source": str(src), "documents": len(docs)}

    _build_locked(directory, build)
    return Corpus(name=f"text:{path}", vocab_size=BYTE_VOCAB, token_bytes=BYTE_TOKEN_BYTES,
                  load_split=_reader(directory), floor_bpb=None)
