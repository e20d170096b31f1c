"""ClimbMix data for the harness: download, BPE tokenizer, BOS-aligned packing.

Harness-side (imported by prepare.py, never edited by candidates). First use downloads the
public ClimbMix-400B shuffle parquet shards (a pinned validation shard, a pinned test shard and
a configurable number of train shards), trains a byte-level BPE tokenizer (vocab 8192) once on
the train shards, tokenizes every shard to a flat uint16 file, and writes a manifest whose
`content_hash` names data + tokenizer, so every node of a cluster can check it has the same.
pyarrow, tokenizers and filelock are imported only when climbmix is actually used.

Knobs (environment): EVOLVE_CLIMBMIX_URL (base URL of the shards, e.g. a mirror),
EVOLVE_CLIMBMIX_TRAIN_SHARDS (default 10), EVOLVE_CLIMBMIX_RETRIES (default 5),
EVOLVE_CLIMBMIX_VOCAB_SIZE (default 8192).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from corpus import Corpus, DataError, Split, atomic_write_bytes, sha256_file

DEFAULT_BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
MAX_SHARD = 6542  # the last shard of the public dataset
VAL_SHARD = MAX_SHARD  # pinned validation shard (used for selection)
TEST_SHARD = MAX_SHARD - 1  # pinned held-out test shard (reported, never selected on)
VOCAB_SIZE = 8192
BOS = "<|bos|>"
SPECIAL_TOKENS = (BOS, "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>")
FORMAT_VERSION = 1
TEXT_COLUMN = "text"
# GPT-4 style pre-tokenization (digits grouped by at most 3; possessive quantifiers as in tiktoken)
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


class ClimbmixError(DataError):
    """A data problem the user can act on (network, corrupt shard, missing dataset)."""


@dataclass(frozen=True)
class ClimbmixConfig:
    """Where the shards come from and how much to use; `from_env` reads the EVOLVE_CLIMBMIX_* knobs."""

    base_url: str = DEFAULT_BASE_URL
    num_train_shards: int = 10
    val_shard: int = VAL_SHARD
    test_shard: int = TEST_SHARD
    vocab_size: int = VOCAB_SIZE
    tokenizer_max_chars: int = 1_000_000_000
    tokenizer_doc_cap: int = 10_000  # chars of one document used for tokenizer training
    retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> ClimbmixConfig:
        env = os.environ
        return cls(
            base_url=env.get("EVOLVE_CLIMBMIX_URL", DEFAULT_BASE_URL).rstrip("/"),
            num_train_shards=int(env.get("EVOLVE_CLIMBMIX_TRAIN_SHARDS", "10")),
            retries=int(env.get("EVOLVE_CLIMBMIX_RETRIES", "5")),
            vocab_size=int(env.get("EVOLVE_CLIMBMIX_VOCAB_SIZE", str(VOCAB_SIZE))),
        )

    @property
    def train_shards(self) -> list[int]:
        if not 1 <= self.num_train_shards <= min(self.val_shard, self.test_shard):
            raise ClimbmixError(f"num_train_shards must be in 1..{self.test_shard}, got {self.num_train_shards}")
        return list(range(self.num_train_shards))


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


# --------------------------------------------------------------------------- download


def _open_parquet_ok(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).schema_arrow.field(TEXT_COLUMN)
        return True
    except Exception:
        return False


def _fetch_once(url: str, dest: Path, timeout_s: float) -> None:
    """One HTTP attempt into `dest.partial`, resuming from its size (Range) when the server allows."""
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "evolve-climbmix/1"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        expected = response.headers.get("Content-Length")
        expected_total = have + int(expected) if expected is not None else None
        with open(partial, "ab" if have else "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    size = partial.stat().st_size
    if expected_total is not None and size != expected_total:
        raise ConnectionError(f"short read: {size} of {expected_total} bytes")
    os.replace(partial, dest)


def download_shard(url: str, dest: Path, config: ClimbmixConfig, log: Callable[[str], None] = print) -> Path:
    """Download `url` to `dest` with retries + exponential backoff; never leaves `dest` half-written.

    A file that exists but does not open as parquet is downloaded again once; a second bad copy
    is a clear error.
    """
    for round_ in range(2):
        if dest.exists():
            if _open_parquet_ok(dest):
                return dest
            if round_ == 1:
                dest.unlink()
                raise ClimbmixError(f"{url} is not a readable parquet file (downloaded twice); is EVOLVE_CLIMBMIX_URL right?")
            log(f"climbmix: {dest.name} is corrupt, downloading it again")
            dest.unlink()
            dest.with_name(dest.name + ".partial").unlink(missing_ok=True)
        _download_with_retries(url, dest, config, log)
    return dest


def _download_with_retries(url: str, dest: Path, config: ClimbmixConfig, log: Callable[[str], None]) -> None:
    last: Exception | None = None
    for attempt in range(config.retries + 1):
        if attempt:
            delay = config.backoff_s * 2 ** (attempt - 1)
            log(f"climbmix: attempt {attempt}/{config.retries} failed ({last}); retrying {dest.name} in {delay:.1f}s")
            time.sleep(delay)
        try:
            _fetch_once(url, dest, config.timeout_s)
            return
        except urllib.error.HTTPError as err:
            if err.code in (408, 429) or err.code >= 500:
                last = err
                continue
            if err.code == 416:  # our partial file is already complete or bogus: start clean
                dest.with_name(dest.name + ".partial").unlink(missing_ok=True)
                last = err
                continue
            raise ClimbmixError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last = err
    reason = getattr(last, "reason", last)
    raise ClimbmixError(
        f"cannot download {url} after {config.retries + 1} attempts ({reason}). The climbmix data needs "
        f"network access on first use: check the connection, set EVOLVE_CLIMBMIX_URL to a reachable "
        f"mirror, or copy the shards into {dest.parent} (or use --data synthetic)"
    ) from last


# --------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte <-> printable-char table that byte-level BPE vocabularies are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def iter_texts(paths: list[Path], max_chars: int | None = None, doc_cap: int | None = None) -> Iterator[str]:
    """Documents of the shards in order (row group by row group), optionally capped."""
    import pyarrow.parquet as pq

    seen = 0
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            for text in parquet.read_row_group(group, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist():
                if not text:
                    continue
                text = text[:doc_cap] if doc_cap else text
                yield text
                seen += len(text)
                if max_chars is not None and seen >= max_chars:
                    return


def train_tokenizer(train_paths: list[Path], config: ClimbmixConfig):
    """Byte-level BPE with GPT-4 style splitting, trained on the train shards only."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = iter_texts(train_paths, config.tokenizer_max_chars, config.tokenizer_doc_cap)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for; special tokens count 0 (so val_bpb ignores them)."""
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int32)
    specials = set(SPECIAL_TOKENS)
    for token, index in tokenizer.get_vocab().items():
        lengths[index] = 0 if token in specials else len(bytes(decode[c] for c in token))
    return lengths


# --------------------------------------------------------------------------- tokenized files


def tokenize_shard(tokenizer, parquet_path: Path, prefix: Path, batch_docs: int = 1024) -> None:
    """Write `<prefix>.bin` (uint16 tokens, each document led by BOS) and `<prefix>.idx` (doc starts + end)."""
    bos = tokenizer.token_to_id(BOS)
    pieces: list[np.ndarray] = []
    starts = [0]
    batch: list[str] = []

    def flush() -> None:
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            doc = np.empty(len(encoding.ids) + 1, dtype=np.uint16)
            doc[0] = bos
            doc[1:] = encoding.ids
            pieces.append(doc)
            starts.append(starts[-1] + len(doc))
        batch.clear()

    for text in iter_texts([parquet_path]):
        batch.append(text)
        if len(batch) == batch_docs:
            flush()
    flush()
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
    atomic_write_bytes(prefix.with_suffix(".idx"), np.asarray(starts, dtype=np.int64).tobytes())
    atomic_write_bytes(prefix.with_suffix(".bin"), tokens.tobytes())  # .bin last: it marks completion


def _concatenate(prefixes: list[Path], out: Path) -> None:
    """One train stream from per-shard files, streamed to disk (temp + rename), sources removed."""
    offsets, total = [np.zeros(1, dtype=np.int64)], 0
    tmp = out.with_name(f".{out.name}.bin.{os.getpid()}.tmp")
    with open(tmp, "wb") as sink:
        for prefix in prefixes:
            with open(prefix.with_suffix(".bin"), "rb") as source:
                while block := source.read(1 << 24):
                    sink.write(block)
            starts = np.fromfile(prefix.with_suffix(".idx"), dtype=np.int64)
            offsets.append(starts[1:] + total)
            total += int(starts[-1])
    atomic_write_bytes(out.with_suffix(".idx"), np.concatenate(offsets).tobytes())
    os.replace(tmp, out.with_suffix(".bin"))
    for prefix in prefixes:
        prefix.with_suffix(".bin").unlink()
        prefix.with_suffix(".idx").unlink()


def open_split(prefix: Path) -> Split:
    """A tokenized split, memory-mapped: row starts are the BOS positions (document starts)."""
    ends = np.fromfile(prefix.with_suffix(".idx"), dtype=np.int64)
    tokens = np.memmap(prefix.with_suffix(".bin"), dtype=np.uint16, mode="r")
    if int(ends[-1]) != len(tokens):
        raise DataError(f"{prefix}.bin holds {len(tokens)} tokens, its index says {int(ends[-1])}; delete {prefix.parent} to rebuild")
    return Split(tokens=tokens, starts=ends[:-1])


# --------------------------------------------------------------------------- prepare + load


def data_root(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "climbmix"


def prepare(cache_dir: str | Path, config: ClimbmixConfig | None = None, log: Callable[[str], None] = print) -> dict:
    """Download, train the tokenizer and tokenize, once; idempotent and safe across processes.

    Returns the manifest. A file lock serialises concurrent workers on one node; the manifest is
    written last, so its presence means everything it names is complete.
    """
    from filelock import FileLock

    config = config or ClimbmixConfig.from_env()
    root = data_root(cache_dir)
    shards_dir = root / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        manifest = read_manifest(cache_dir)
        if manifest is not None and _manifest_matches(root, manifest, config):
            return manifest
        splits = {"val": config.val_shard, "test": config.test_shard}
        indices = [*splits.values(), *config.train_shards]
        for index in indices:
            download_shard(f"{config.base_url}/{shard_name(index)}", shards_dir / shard_name(index), config, log)
        shard_hashes = {shard_name(i): sha256_file(shards_dir / shard_name(i)) for i in indices}
        train_paths = [shards_dir / shard_name(i) for i in config.train_shards]
        data_key = _hash_json([shard_hashes, config.train_shards, config.vocab_size])[:16]
        tok_path = root / f"tokenizer-{data_key}.json"
        if not tok_path.exists():
            log(f"climbmix: training the BPE tokenizer (vocab {config.vocab_size}) on {len(train_paths)} train shards")
            atomic_write_bytes(tok_path, train_tokenizer(train_paths, config).to_str().encode())
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tok_path))
        tok_hash = sha256_file(tok_path)
        content = {"format": FORMAT_VERSION, "shards": shard_hashes, "train_shards": config.train_shards,
                   "tokenizer_sha256": tok_hash}
        content_hash = _hash_json(content)
        tokens_dir = root / f"tokens-{content_hash[:16]}"
        tokens_dir.mkdir(exist_ok=True)
        for split, index in splits.items():
            if not (tokens_dir / f"{split}.bin").exists():
                log(f"climbmix: tokenizing the {split} shard {shard_name(index)}")
                tokenize_shard(tokenizer, shards_dir / shard_name(index), tokens_dir / split)
        if not (tokens_dir / "train.bin").exists():
            prefixes = []
            for index in config.train_shards:
                prefix = tokens_dir / f"train-{index:05d}"
                if not prefix.with_suffix(".bin").exists():
                    log(f"climbmix: tokenizing train shard {shard_name(index)}")
                    tokenize_shard(tokenizer, shards_dir / shard_name(index), prefix)
                prefixes.append(prefix)
            _concatenate(prefixes, tokens_dir / "train")
        atomic_write_bytes(root / "tokenizer.json", tok_path.read_bytes())
        atomic_write_bytes(root / "token_bytes.npy", _npy_bytes(token_byte_lengths(tokenizer)))
        manifest = {
            **content,
            "content_hash": content_hash,
            "base_url": config.base_url,
            "splits": {split: shard_name(i) for split, i in splits.items()},
            "requested_vocab_size": config.vocab_size,
            "vocab_size": tokenizer.get_vocab_size(),
            "bos_id": tokenizer.token_to_id(BOS),
            "tokens_dir": tokens_dir.name,
        }
        atomic_write_bytes(root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        log(f"climbmix: ready, content hash {content_hash[:16]}")
    return manifest


def load_corpus(cache_dir: str | Path, config: ClimbmixConfig | None = None, log: Callable[[str], None] = print) -> Corpus:
    """Prepare if needed, then the corpus the harness trains and scores on (splits opened lazily)."""
    manifest = prepare(cache_dir, config, log)
    root = data_root(cache_dir)
    tokens_dir = root / manifest["tokens_dir"]

    def load_split(split: str) -> Split:
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown climbmix split {split!r} (known: train, val, test)")
        return open_split(tokens_dir / split)

    return Corpus(
        name="climbmix",
        vocab_size=int(manifest["requested_vocab_size"]),
        token_bytes=_padded(np.load(root / "token_bytes.npy"), int(manifest["requested_vocab_size"])),
        load_split=load_split,
    )


def load_tokenizer(cache_dir: str | Path):
    """The trained tokenizer (HuggingFace `tokenizers`), for encode/decode outside the harness."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(data_root(cache_dir) / "tokenizer.json"))


def read_manifest(cache_dir: str | Path) -> dict | None:
    """The manifest (content_hash names data + tokenizer), or None before the first prepare."""
    try:
        return json.loads((data_root(cache_dir) / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _padded(lengths: np.ndarray, size: int) -> np.ndarray:
    """A tokenizer trained on little text may have fewer ids than asked; unused ids count 0 bytes."""
    out = np.zeros(max(size, len(lengths)), dtype=np.int32)
    out[: len(lengths)] = lengths
    return out


def _hash_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _manifest_matches(root: Path, manifest: dict, config: ClimbmixConfig) -> bool:
    return (
        manifest.get("format") == FORMAT_VERSION
        and manifest.get("train_shards") == config.train_shards
        and manifest.get("splits") == {"val": shard_name(config.val_shard), "test": shard_name(config.test_shard)}
        and manifest.get("requested_vocab_size") == config.vocab_size
        and all((root / manifest["tokens_dir"] / f"{s}.bin").exists() for s in ("train", "val", "test"))
    )


def load_climbmix(cache_dir: Path, seq_len: int) -> Corpus:
    """The harness's entry point (prepare.py DATA_SOURCES): config from EVOLVE_CLIMBMIX_* env."""
    del seq_len  # every split is a flat document stream; the harness cuts its own rows
    return load_corpus(cache_dir, ClimbmixConfig.from_env(), log=lambda msg: print(msg, flush=True))
