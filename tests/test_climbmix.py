"""ClimbMix data path against small parquet shards served from 127.0.0.1 by a real HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
sys.path.insert(0, str(TEMPLATE))

import climbmix  # noqa: E402
from climbmix import ClimbmixConfig, ClimbmixError, shard_name  # noqa: E402

WORDS = ("the cat sat on a mat while über-fast foxes jumped; 数据 and naïve café owners "
         "counted 1234567 coins, then slept. ").split()


def _docs(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 120))) + "\n" for _ in range(n)]


def _parquet_bytes(texts: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": texts}), sink, row_group_size=64)
    return sink.getvalue().to_pybytes()


class Server:
    """Serves `files` by name; `faults` is a queue of per-request misbehaviours."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.faults: list[str] = []  # "500" | "truncate" | "garbage"
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                fault = outer.faults.pop(0) if outer.faults else None
                if fault == "500":
                    self.send_error(500, "boom")
                    return
                if name not in outer.files:
                    self.send_error(404, "no such shard")
                    return
                body = b"not a parquet file at all" * 10 if fault == "garbage" else outer.files[name]
                start = 0
                if (rng := self.headers.get("Range")) and fault != "garbage":
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if fault == "truncate":
                    payload = payload[: len(payload) // 2]
                self.wfile.write(payload)
                self.wfile.flush()
                if fault == "truncate":
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets/climbmix/resolve/main"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


SHARDS = {
    shard_name(0): _parquet_bytes(_docs(0, 300)),
    shard_name(1): _parquet_bytes(_docs(1, 300)),
    shard_name(climbmix.TEST_SHARD): _parquet_bytes(_docs(2, 120)),
    shard_name(climbmix.VAL_SHARD): _parquet_bytes(_docs(3, 400)),
}


@pytest.fixture
def server():
    srv = Server(dict(SHARDS))
    yield srv
    srv.close()


def _config(url: str, **kw) -> ClimbmixConfig:
    base = dict(base_url=url, num_train_shards=2, vocab_size=400, retries=3, backoff_s=0.01, timeout_s=10)
    return ClimbmixConfig(**{**base, **kw})


def test_prepare_downloads_tokenizes_and_is_idempotent(server: Server, tmp_path: Path) -> None:
    config = _config(server.url)
    manifest = climbmix.prepare(tmp_path, config, log=lambda _: None)
    root = tmp_path / "climbmix"
    for name, body in SHARDS.items():
        assert (root / "shards" / name).read_bytes() == body
    assert not list(root.rglob("*.partial")) and not list(root.rglob("*.tmp"))
    assert manifest["vocab_size"] <= 400 and len(manifest["content_hash"]) == 64
    assert climbmix.read_manifest(tmp_path) == manifest

    served = len(server.requests)
    assert climbmix.prepare(tmp_path, config, log=lambda _: None) == manifest
    assert len(server.requests) == served  # cached: no network on the second call

    corpus = climbmix.load_corpus(tmp_path, config, log=lambda _: None)
    assert corpus.name == "climbmix" and corpus.vocab_size == 400 and corpus.token_bytes.shape == (400,)
    bos = manifest["bos_id"]
    assert corpus.token_bytes[bos] == 0
    for split, texts in (("val", _docs(3, 400)), ("train", _docs(0, 300) + _docs(1, 300))):
        data = corpus.load_split(split)
        assert len(data.starts) == len(texts)
        assert np.all(np.asarray(data.tokens)[data.starts] == bos)  # every document starts with BOS
        # val_bpb's denominator: token byte lengths add up to the documents' UTF-8 bytes exactly
        total_bytes = int(corpus.token_bytes[np.asarray(data.tokens, dtype=np.int64)].sum())
        assert total_bytes == sum(len(t.encode("utf-8")) for t in texts)


def test_harness_entry_point_reads_env(server: Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVOLVE_CLIMBMIX_URL", server.url)
    monkeypatch.setenv("EVOLVE_CLIMBMIX_TRAIN_SHARDS", "1")
    monkeypatch.setenv("EVOLVE_CLIMBMIX_VOCAB_SIZE", "300")
    corpus = climbmix.load_climbmix(tmp_path, 64)
    assert corpus.vocab_size == 300
    assert climbmix.read_manifest(tmp_path)["train_shards"] == [0]
    assert {name for name, _ in server.requests} == {shard_name(0), shard_name(climbmix.VAL_SHARD),
                                                    shard_name(climbmix.TEST_SHARD)}


def test_tokenizer_round_trip_and_hash_stable_across_processes(server: Server, tmp_path: Path) -> None:
    config = _config(server.url)
    manifest = climbmix.prepare(tmp_path / "a", config, log=lambda _: None)
    tokenizer = climbmix.load_tokenizer(tmp_path / "a")
    for text in ["über-fast foxes 数据 1234567\n", "", "  spaces\tand\nnewlines  ", "naïve café 🙂"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    corpus = climbmix.load_corpus(tmp_path / "a", config, log=lambda _: None)
    val = corpus.load_split("val")
    first_doc = np.asarray(val.tokens[val.starts[0] + 1 : val.starts[1]]).tolist()
    assert tokenizer.decode(first_doc) == _docs(3, 400)[0]

    # another process, another cache dir, same shards -> the same data + tokenizer hash
    code = (
        f"import sys; sys.path.insert(0, {str(TEMPLATE)!r}); import climbmix, json;"
        f"c = climbmix.ClimbmixConfig(base_url={server.url!r}, num_train_shards=2, vocab_size=400,"
        f" retries=1, backoff_s=0.01);"
        f"print(json.dumps(climbmix.prepare({str(tmp_path / 'b')!r}, c, log=lambda _: None)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other["content_hash"] == manifest["content_hash"]
    assert other["tokenizer_sha256"] == manifest["tokenizer_sha256"]


def test_retry_after_server_error_then_resume_a_truncated_download(server: Server, tmp_path: Path) -> None:
    name = shard_name(0)
    server.faults = ["500", "truncate"]
    dest = climbmix.download_shard(f"{server.url}/{name}", tmp_path / name, _config(server.url), log=lambda _: None)
    assert dest.read_bytes() == SHARDS[name]
    ranges = [r for n, r in server.requests if n == name]
    assert len(ranges) == 3 and ranges[0] is None and ranges[1] is None
    assert ranges[2] == f"bytes={len(SHARDS[name]) // 2}-"  # resumed where the cut-off left it


def test_corrupt_file_is_downloaded_again(server: Server, tmp_path: Path) -> None:
    name = shard_name(1)
    (tmp_path / name).write_bytes(b"PAR1 half a file")
    dest = climbmix.download_shard(f"{server.url}/{name}", tmp_path / name, _config(server.url), log=lambda _: None)
    assert dest.read_bytes() == SHARDS[name]


def test_corrupt_twice_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    name = shard_name(1)
    server.faults = ["garbage", "garbage"]
    with pytest.raises(ClimbmixError, match="not a readable parquet file"):
        climbmix.download_shard(f"{server.url}/{name}", tmp_path / name, _config(server.url), log=lambda _: None)
    assert not (tmp_path / name).exists()


def test_missing_shard_is_a_clear_error_without_retries(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ClimbmixError, match="HTTP 404"):
        climbmix.download_shard(f"{server.url}/nope.parquet", tmp_path / "nope.parquet", _config(server.url))
    assert len(server.requests) == 1


def test_network_absent_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _config(f"http://127.0.0.1:{port}/x", retries=2)
    with pytest.raises(ClimbmixError, match="cannot download .* after 3 attempts.*network access"):
        climbmix.prepare(tmp_path, config, log=lambda _: None)
    assert climbmix.read_manifest(tmp_path) is None
    assert not list((tmp_path / "climbmix" / "shards").iterdir())


def test_harness_runs_cpu_micro_on_climbmix(server: Server, tmp_path: Path) -> None:
    """prepare.py, as a worker runs it, trains and scores on climbmix fetched from the server."""
    env = {**os.environ, "EVOLVE_CLIMBMIX_URL": server.url,
           "EVOLVE_CLIMBMIX_TRAIN_SHARDS": "2", "EVOLVE_CLIMBMIX_VOCAB_SIZE": "300",
           "OMP_NUM_THREADS": "1"}
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "prepare.py", "run", "--profile", "cpu-micro", "--data", "climbmix",
         "--cache-dir", str(tmp_path / "cache"), "--result", str(result), "--train", "train_cpu.py"],
        cwd=TEMPLATE, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(result.read_text())
    assert metrics["status"] == "ok" and metrics["data"] == "climbmix"
    assert 0 < metrics["val_bpb"] < 20 and "entropy_floor_bpb" not in metrics
    assert climbmix.read_manifest(tmp_path / "cache")["content_hash"]
