"""Scoring, evaluation rows, the causality probe and the synthetic language, in-process."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train_template"))

from causality import check_model  # noqa: E402
from corpus import Split, eval_rows  # noqa: E402
from scoring import InvalidModel, evaluate_bpb  # noqa: E402
from synthlang import Language, LanguageSpec  # noqa: E402

CPU = torch.device("cpu")


class FixedBigram(torch.nn.Module):
    """logits[b, t] = table[idx[b, t]]: a tiny fixed model whose score is computable by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_val_bpb_equals_a_hand_computation() -> None:
    table = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    rows = np.array([[0, 1, 2, 2], [0, 2, 1, 0]])
    score_from = np.array([1, 0])           # row 0's first target is not scored
    token_bytes = np.array([1, 2, 3])       # a token of id k stands for k+1 UTF-8 bytes
    got = evaluate_bpb(FixedBigram(table), rows, score_from, token_bytes, CPU, batch_rows=1)
    nats, nbytes = 0.0, 0
    for row, first in zip(rows.tolist(), score_from.tolist(), strict=True):
        for j in range(first, len(row) - 1):
            logits = table[row[j]].tolist()
            log_z = math.log(sum(math.exp(v) for v in logits))
            nats += log_z - logits[row[j + 1]]
            nbytes += int(token_bytes[row[j + 1]])
    assert got == pytest.approx(nats / nbytes / math.log(2), rel=1e-6)  # float32 logits


def test_tokens_worth_zero_bytes_are_not_scored() -> None:
    table = torch.zeros(3, 3)
    rows = np.array([[0, 1, 2, 1]])
    with_special = evaluate_bpb(FixedBigram(table), rows, np.array([0]), np.array([0, 1, 0]), CPU)
    assert with_special == pytest.approx(math.log(3) / math.log(2))  # only the two 1s count


def test_a_model_of_the_wrong_shape_is_invalid() -> None:
    class Flat(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(idx.shape[0], 5)

    with pytest.raises(InvalidModel, match=r"expected logits of shape \[1, 3, 5\]"):
        evaluate_bpb(Flat(), np.array([[0, 1, 2, 3]]), np.array([0]), np.ones(5), CPU)


def _split(text: str) -> Split:
    tokens = np.frombuffer(text.encode(), dtype=np.uint8)
    return Split(tokens, np.flatnonzero(tokens == 10).astype(np.int64))


def test_eval_rows_start_at_boundaries_and_score_each_token_once() -> None:
    language = Language(LanguageSpec(vocab=60, topics=3, seed=5))
    split = _split(language.sample_stream(6000, seed=1))
    rows, score_from = eval_rows(split, 48, 10**9)
    assert (rows[:, 0] == 10).all()
    seen: set[int] = set()
    stream = split.tokens
    starts = set(split.starts.tolist())
    position = {}
    for row, first in zip(rows, score_from, strict=True):
        # locate the row in the stream: the boundary at which it starts
        pos = next(p for p in sorted(starts) if p not in position and (stream[p:p + 49] == row).all())
        position[pos] = True
        scored = set(range(pos + 1 + int(first), pos + 49))
        assert not scored & seen
        seen |= scored
    assert len(seen) > 0.25 * len(stream)  # tails of documents longer than a row are skipped


def test_the_oracle_scores_the_floor_on_a_tiny_language() -> None:
    language = Language(LanguageSpec(vocab=40, topics=3, successors=3, seed=7))
    split = _split(language.sample_stream(4000, seed=2))
    rows, score_from = eval_rows(split, 32, 10**9)
    floor = language.floor_bpb(rows, score_from)

    class Oracle(torch.nn.Module):
        def forward(self, idx):
            padded = torch.cat([idx, torch.full((idx.shape[0], 1), 10)], dim=1)
            return torch.stack([torch.as_tensor(language.next_byte_logprobs(r.numpy()))
                                for r in padded]).float()

    got = evaluate_bpb(Oracle(), rows, score_from, np.ones(256), CPU)
    assert got == pytest.approx(floor, abs=1e-5)
    assert 0.3 < floor < 4


def test_long_context_helps_in_the_synthetic_language() -> None:
    """The topic posterior sharpens: later bytes of a document are cheaper than early ones."""
    language = Language(LanguageSpec(seed=3))
    docs = [d + "\n" for d in language.sample_stream(25_000, seed=4).split("\n")[1:-1]]
    early, late = [], []
    for doc in docs:
        if len(doc) < 80:
            continue
        lp = language.next_byte_logprobs(np.frombuffer(("\n" + doc).encode(), dtype=np.uint8))
        nll = -lp[np.arange(len(doc)), np.frombuffer(doc.encode(), dtype=np.uint8)]
        early.append(nll[:20].mean())
        late.append(nll[60:80].mean())
    assert np.mean(late) < 0.9 * np.mean(early)


def test_document_probabilities_sum_to_one_over_a_small_language() -> None:
    """Sampling frequencies match the exact probability of the most common short documents."""
    language = Language(LanguageSpec(vocab=6, topics=2, successors=2, seed=11, doc_end=0.9,
                                     sentence_stop=(0.8, 0.9)))
    import random
    rng = random.Random(0)
    counts: dict[str, int] = {}
    n = 20_000
    for _ in range(n):
        doc = language.sample_document(rng)
        counts[doc] = counts.get(doc, 0) + 1
    for doc, count in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
        exact = math.exp(language.prefix_logprob(doc))
        assert count / n == pytest.approx(exact, abs=4 * math.sqrt(exact / n) + 1e-3)


class Rowmix(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)

    def forward(self, idx):
        out = self.embed(idx)
        return out + out.mean(dim=0, keepdim=True)  # batch statistics: rows see each other


class NextToken(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)

    def forward(self, idx):
        return self.embed(torch.roll(idx, -1, dims=1))


class Causal(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)

    def forward(self, idx):
        return self.embed(idx).cumsum(dim=1)


@pytest.mark.parametrize("model", [Rowmix, NextToken])
def test_the_causality_check_rejects_leaks(model) -> None:
    torch.manual_seed(0)
    rows = np.random.default_rng(0).integers(0, 16, size=(4, 33))
    _, problem = check_model(model(16), rows, np.zeros(4, dtype=np.int64), np.ones(16), CPU)
    assert problem is not None and problem.startswith("causality check failed")


def test_the_causality_check_accepts_a_causal_model() -> None:
    torch.manual_seed(0)
    rows = np.random.default_rng(0).integers(0, 16, size=(4, 33))
    _, problem = check_model(Causal(16), rows, np.zeros(4, dtype=np.int64), np.ones(16), CPU)
    assert problem is None


def _on_the_host(model: torch.nn.Module, vocab: int):
    """The model as the referee sees it on a CPU profile: numpy rows in, numpy logits out."""
    from scoring import model_logits

    fn = model_logits(model, vocab)
    return lambda x: fn(torch.from_numpy(np.asarray(x))).numpy()


def test_the_host_maths_scores_as_torch_does() -> None:
    """The referee on a CPU profile computes the loss with numpy (it never imports torch):
    the same bpb as torch's float32 cross-entropy to 1e-7 (its rounding), and the same
    per-position losses."""
    from scoring import score_rows

    torch.manual_seed(0)
    model = Causal(64)
    with torch.no_grad():
        model.embed.weight.mul_(3.0)  # peaked distributions, as a trained model's
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 64, size=(50, 17))
    first = rng.integers(0, 8, size=50)
    token_bytes = rng.integers(0, 4, size=64)  # some tokens worth 0 bytes: not scored
    on_device = score_rows(model_logits_of(model, 64), rows, first, token_bytes, CPU, 16)
    on_host = score_rows(_on_the_host(model, 64), rows, first, token_bytes, None, 16)
    assert isinstance(on_host.nll, np.ndarray)
    assert on_host.bpb == pytest.approx(on_device.bpb, rel=1e-7)
    assert np.allclose(on_host.nll, on_device.nll.numpy(), atol=1e-5)
    assert np.array_equal(on_host.weights, on_device.weights.numpy())


def model_logits_of(model: torch.nn.Module, vocab: int):
    from scoring import model_logits

    return model_logits(model, vocab)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_logit_is_invalid_on_the_host(bad: float) -> None:
    from scoring import score_rows

    rows = np.array([[0, 1, 2, 1, 0]])

    def logits(x):
        out = np.zeros((*x.shape, 3), dtype=np.float32)
        out[0, 2, 1] = bad
        return out

    with pytest.raises(InvalidModel, match="non-finite"):
        score_rows(logits, rows, np.array([0]), np.ones(3), None)


@pytest.mark.parametrize("model,leaks", [(Rowmix, True), (NextToken, True), (Causal, False)])
def test_the_host_causality_check_judges_as_on_a_device(model, leaks: bool) -> None:
    from causality import check
    from scoring import score_rows

    torch.manual_seed(0)
    rows = np.random.default_rng(0).integers(0, 16, size=(8, 33))
    fn = _on_the_host(model(16), 16)
    scored = score_rows(fn, rows, np.zeros(8, dtype=np.int64), np.ones(16), None, 4)
    problem, stats = check(fn, scored, rows, rows[::-1].ravel(), 4, 32, 0, None)
    assert (problem is not None) == leaks, problem
    assert stats["causality_cuts"] > 0
