"""A seeded stochastic language whose exact document probabilities are known.

Each document draws a latent topic t ~ pi. Sentences are words separated by " " and ended
by "."; after "." the document either goes on with " " or ends with "\\n". Words follow the
topic's sparse Markov chain over a Zipf-like vocabulary of distinct lowercase words:

    P(w | prev, t) = (1 - eps) * S_t[prev][w] + eps * U_t[w]

where S_t[prev] puts Dirichlet weights on a few successors and U_t is the topic's Zipf
unigram. A word ends its sentence with probability q_t, and a sentence ends its document
with probability p_end. So P(doc) = sum_t pi_t prod P(event | t): exact and cheap, and the
topic posterior sharpens as a document goes on, which is why long context helps.

Text is bytes (ASCII), one token per byte; "\\n" is the document end mark and a boundary.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LETTERS = "abcdefghijklmnopqrstuvwxyz"
END = "\n"
LOG_ZERO = -1.0e4  # finite stand-in for log(0) in oracle logits (keeps comparisons NaN-free)


@dataclass(frozen=True)
class LanguageSpec:
    vocab: int = 600          # distinct words
    topics: int = 8
    successors: int = 6       # sparse successors per (topic, previous word)
    eps: float = 0.1          # weight of the topic unigram in every transition
    zipf: float = 1.1
    topic_spread: float = 1.5  # lognormal sigma that makes topics prefer different words
    sentence_stop: tuple[float, float] = (0.12, 0.25)  # range of per-topic q_t
    doc_end: float = 0.2      # P(document ends | sentence ended)
    seed: int = 1234


class Language:
    """The generator and its exact probabilities (word level and byte level)."""

    def __init__(self, spec: LanguageSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.words = _make_words(spec.vocab, rng)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.start = spec.vocab  # the state at a sentence start
        T, V = spec.topics, spec.vocab
        self.pi = rng.dirichlet(np.full(T, 4.0))
        base = 1.0 / np.arange(1, V + 1) ** spec.zipf
        unigram = base[None, :] * np.exp(spec.topic_spread * rng.standard_normal((T, V)))
        self.unigram = unigram / unigram.sum(axis=1, keepdims=True)  # [T, V]
        lo, hi = spec.sentence_stop
        self.q = rng.uniform(lo, hi, size=T)
        # sparse[state] -> {word id: vector over topics of S_t[state][w]}
        self.sparse: list[dict[int, np.ndarray]] = []
        for _state in range(V + 1):
            entry: dict[int, np.ndarray] = {}
            for t in range(T):
                succ = rng.choice(V, size=spec.successors, replace=False, p=self.unigram[t])
                weights = rng.dirichlet(np.full(spec.successors, 0.5))
                for w, p in zip(succ.tolist(), weights.tolist(), strict=True):
                    entry.setdefault(w, np.zeros(T))[t] += p
            self.sparse.append(entry)
        self.unigram_prefix: dict[str, np.ndarray] = {}
        self.children: dict[str, set[str]] = {}
        for i, w in enumerate(self.words):
            for k in range(len(w) + 1):
                p = w[:k]
                self.unigram_prefix[p] = self.unigram_prefix.get(p, 0.0) + self.unigram[:, i]
                if k < len(w):
                    self.children.setdefault(p, set()).add(w[k])
        self._samplers: dict[tuple[int, int], list[float]] = {}
        self._prefix_mass_cached = lru_cache(maxsize=None)(self._sparse_prefix)

    # ---- exact probabilities -------------------------------------------------------------

    def word_prob(self, state: int, word: str) -> np.ndarray:
        """P(word | state, t) for every topic (zeros if not a word)."""
        w = self.index.get(word)
        if w is None:
            return np.zeros(self.spec.topics)
        sparse = self.sparse[state].get(w)
        eps = self.spec.eps
        return (1 - eps) * (sparse if sparse is not None else 0.0) + eps * self.unigram[:, w]

    def _sparse_prefix(self, state: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for w, vec in self.sparse[state].items():
            word = self.words[w]
            for k in range(len(word) + 1):
                out[word[:k]] = out.get(word[:k], 0.0) + vec
        return out

    def prefix_mass(self, state: int, prefix: str) -> np.ndarray:
        """P(next word starts with prefix | state, t), per topic: the words sharing it, summed."""
        eps = self.spec.eps
        sparse = self._prefix_mass_cached(state).get(prefix, 0.0)
        return (1 - eps) * sparse + eps * self.unigram_prefix.get(prefix, 0.0)

    def doc_logprob_vector(self, text: str, complete: bool) -> np.ndarray | None:
        """log P(text, t) per topic, text from a document's start; None if impossible.

        complete: text is a whole document without its end mark (which is then counted).
        Otherwise text is a prefix that may stop anywhere, mid-word included.
        """
        logq, log1q = np.log(self.q), np.log1p(-self.q)
        lp = np.log(self.pi).copy()
        state, expect, pos, n = self.start, "word", 0, len(text)
        with np.errstate(divide="ignore"):
            while pos < n:
                if expect == "word":
                    end = pos
                    while end < n and text[end] in LETTERS:
                        end += 1
                    word = text[pos:end]
                    if end == n and not complete:  # the last word may go on: sum its extensions
                        mass = self.prefix_mass(state, word)
                        return lp + np.log(mass) if mass.any() else None
                    prob = self.word_prob(state, word)
                    if not word or not prob.any():
                        return None
                    lp = lp + np.log(prob)
                    state, expect, pos = self.index[word], "sep", end
                elif expect == "sep":
                    if text[pos] == " ":
                        lp, expect = lp + log1q, "word"
                    elif text[pos] == ".":
                        lp, expect = lp + logq, "after_dot"
                    else:
                        return None
                    pos += 1
                else:  # after "."
                    if text[pos] != " ":
                        return None
                    lp = lp + math.log1p(-self.spec.doc_end)
                    state, expect, pos = self.start, "word", pos + 1
        if complete:
            if expect != "after_dot":
                return None
            lp = lp + math.log(self.spec.doc_end)
        elif expect == "word" and pos == n and n > 0 and text[-1] != " ":
            return None
        return lp

    def prefix_logprob(self, text: str) -> float:
        """Exact log P(text) for text that starts at a document start and may span documents."""
        total = 0.0
        docs = text.split(END)
        for i, doc in enumerate(docs):
            complete = i < len(docs) - 1
            if not complete and not doc:
                break
            lp = self.doc_logprob_vector(doc, complete)
            if lp is None:
                return -math.inf
            total += float(np.logaddexp.reduce(lp))
        return total

    def floor_bpb(self, rows: np.ndarray, score_from: np.ndarray) -> float:
        """Entropy floor of exactly the scored bytes of these eval rows, in bits per byte."""
        nats, nbytes = 0.0, 0
        for row, first in zip(rows, score_from, strict=True):
            assert row[0] == ord(END), "eval rows must start at a document boundary"
            text = bytes(row[1:].astype(np.uint8)).decode("ascii")
            nats -= self.prefix_logprob(text) - self.prefix_logprob(text[: int(first)])
            nbytes += len(text) - int(first)
        return nats / nbytes / math.log(2)

    # ---- the byte-level oracle -------------------------------------------------------------

    def next_byte_logprobs(self, row: np.ndarray) -> np.ndarray:
        """log P(row[j+1] = b | row[:j+1]) for every j and byte b: [len(row)-1, 256].

        row[0] must be a boundary. Per topic, the next byte's probability is the mass of the
        words consistent with the prefix so far; topics are mixed by their posterior. After an
        impossible byte (e.g. random tokens) the rest of the row is uniform.
        """
        T = self.spec.topics
        out = np.full((len(row) - 1, 256), -math.log(256.0))
        logpi = np.log(self.pi)
        lp, state, expect, prefix = logpi.copy(), self.start, "word", ""
        logq, log1q = np.log(self.q), np.log1p(-self.q)
        p_end = self.spec.doc_end
        for j in range(len(row) - 1):
            dist: dict[str, np.ndarray] = {}  # byte -> per-topic log probability
            with np.errstate(divide="ignore"):
                if expect == "word":
                    base = self.prefix_mass(state, prefix)
                    for c in self.children.get(prefix, ()):
                        dist[c] = np.log(self.prefix_mass(state, prefix + c)) - np.log(base)
                    if prefix in self.index:
                        whole = np.log(self.word_prob(state, prefix)) - np.log(base)
                        dist[" "] = whole + log1q
                        dist["."] = whole + logq
                elif expect == "after_dot":
                    dist[" "] = np.full(T, math.log1p(-p_end))
                    dist[END] = np.full(T, math.log(p_end))
            post = lp - np.logaddexp.reduce(lp)
            out[j, :] = LOG_ZERO
            for c, vec in dist.items():
                out[j, ord(c)] = float(np.logaddexp.reduce(post + vec))
            c = chr(int(row[j + 1]))
            if c not in dist or not np.isfinite(dist[c]).any():
                out[j + 1 :, :] = -math.log(256.0)
                break
            lp = lp + dist[c]
            if c == END:
                lp, state, expect, prefix = logpi.copy(), self.start, "word", ""
            elif expect == "after_dot":
                state, expect, prefix = self.start, "word", ""
            elif c == " " and expect == "word":
                state, prefix = self.index[prefix], ""
            elif c == ".":
                expect, prefix = "after_dot", ""
            else:
                prefix += c
        return out

    # ---- sampling ------------------------------------------------------------------------

    def _cumulative(self, state: int, topic: int) -> list[float]:
        """Cumulative P(word | state, topic) over word ids, built once per (state, topic)."""
        key = (state, topic)
        if key not in self._samplers:
            probs = self.spec.eps * self.unigram[topic]
            for w, vec in self.sparse[state].items():
                probs[w] += (1 - self.spec.eps) * vec[topic]
            cum = np.cumsum(probs)
            self._samplers[key] = (cum / cum[-1]).tolist()
        return self._samplers[key]

    def sample_document(self, rng: random.Random) -> str:
        """One document, end mark included."""
        topic = rng.choices(range(self.spec.topics), weights=self.pi.tolist())[0]
        q = float(self.q[topic])
        out: list[str] = []
        state = self.start
        while True:
            cum = self._cumulative(state, topic)
            w = min(bisect.bisect_left(cum, rng.random()), len(cum) - 1)
            out.append(self.words[w])
            if rng.random() < q:
                out.append(".")
                if rng.random() < self.spec.doc_end:
                    out.append(END)
                    return "".join(out)
                out.append(" ")
                state = self.start
            else:
                out.append(" ")
                state = w

    def sample_stream(self, n_bytes: int, seed: int) -> str:
        """Documents until at least n_bytes, preceded by one boundary mark."""
        rng = random.Random(seed)
        parts, size = [END], 1
        while size < n_bytes:
            doc = self.sample_document(rng)
            parts.append(doc)
            size += len(doc)
        return "".join(parts)


def _make_words(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct lowercase words, shortest first (frequent words are short, as in speech)."""
    words: set[str] = set()
    while len(words) < n:
        length = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8], p=[.02, .08, .16, .22, .2, .15, .1, .07]))
        words.add("".join(rng.choice(list(LETTERS), size=length)))
    return sorted(words, key=lambda w: (len(w), w))
