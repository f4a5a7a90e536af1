"""BM25 over product titles: one tokeniser, one scoring variant, one ranking rule, two backends.

`BM25Retriever` is a protocol retriever (`describe`, `search`). It indexes the titles of a corpus once
(corpus_1 serves in_domain and novel_query, corpus_2 serves novel_corpus and zero_shot) and scores
queries with one of two libraries:

- "bm25s" (default): precomputed per-(term, document) impacts in a sparse matrix; fast.
- "rank_bm25": the reference implementation (rank-bm25's BM25Okapi / BM25Plus); pure Python per query,
  ~50x slower at search on the default synthetic corpora (benchmarks/results/bm25.md).

Both backends compute the same variant. Only the scores come from the library; tokenisation,
vocabulary, which documents are returned and their order are this module's, shared by both.

Tokenisation (`tokenize`): Unicode NFKC, lower-case, tokens = maximal runs of letters and digits
(`[^\\W_]+`, so punctuation, `_`, spaces and symbols split: "wi-fi" -> wi, fi; "4.6" -> 4, 6). The
"alnum-en-stop" tokeniser also drops Lucene's 33 English stop words (the list bm25s ships as
STOPWORDS_EN, copied here so an upgrade cannot change results). No stemming: no stemmer ships in the
project's dependencies. A query token repeated n times counts n times (both libraries do this;
rank_bm25 issue #19).

Variants (`method`), with k1, b and N documents, df = documents containing the term, tf = its count in
the document, dl = document length in tokens, avgdl = mean dl over the corpus (untitled documents
count, with dl = 0):
- "okapi" (default) = rank-bm25's BM25Okapi: idf = ln(N - df + 0.5) - ln(df + 0.5); a term in more
  than half the documents (idf < 0) gets the floor epsilon * mean idf over the vocabulary (epsilon =
  0.25); term score = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)). bm25s has no such
  idf: it is indexed with its ATIRE term-frequency part (the same formula) and Lucene idf, and each
  term's column of the impact matrix is then rescaled by okapi_idf / lucene_idf, which leaves the
  BM25Okapi impact (up to float32 rounding).
- "bm25+": BM25+ (Lv & Zhai; delta = 1.0, rank-bm25's default), native in both libraries with the same
  formula: idf = ln((N + 1) / df), term score = idf * (delta + tf * (k1 + 1) / (k1 * (1 - b + b * dl /
  avgdl) + tf)). Documents without any query term still score there, but are not returned (below).
- BM25L is not offered: rank-bm25 0.2.2's BM25L multiplies the term score by tf a second time
  (dorianbrown/rank_bm25 issue #5; the fix, PR #20, is not in 0.2.2), so the backends would differ.

Where the backends still differ: arithmetic only. rank-bm25 sums in float64 (rounded to float32 here);
bm25s stores float32 impacts (two roundings on the okapi path) and sums them in float32. Scores agree
to within 2e-7 relative (measured), so two documents whose scores differ by less than that can swap
places; true ties (documents with the same counts of the query terms and the same length) stay exact
in both.

Returned documents and order (same for both backends):
- Only documents that contain at least one query token are returned; the rest of the k slots are
  index -1 with score 0 (an empty query, or one made only of unknown tokens or stop words, returns
  nothing). Filling the list with non-matching documents in corpus order would credit an arbitrary
  order, so we do not. With okapi a matching document normally scores > 0; it can score 0 or less
  only on a degenerate corpus (df exactly N/2, or a negative mean idf), and is still returned.
- Order: float32 score descending, then the lower corpus index first (as the dense search), so the
  order is a function of the returned scores alone. The evaluation protocol then orders tied documents
  inside the list by document id (gcl_eval.protocol.ranking), as for every retriever.
- Documents with no title are indexed as empty (length 0); they never match.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

import numpy as np
import pandas as pd

from gcl_eval.util.console import status, track
from gcl_eval.data.dataset import Documents
from gcl_eval.util.errors import GclError

BACKENDS = ("bm25s", "rank_bm25")
METHODS = ("okapi", "bm25+")
TOKENIZERS = ("alnum", "alnum-en-stop")
DEFAULT_DELTA = 1.0  # BM25+: rank-bm25's default, Lv & Zhai's recommended value

# Lucene's EnglishAnalyzer stop set, as bm25s.stopwords.STOPWORDS_EN (0.3.16).
STOPWORDS_EN = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with",
))

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str | None, *, stopwords: bool = False) -> list[str]:
    """Lower-cased runs of letters/digits of the NFKC-normalised text; None or "" -> []."""
    if not text:
        return []
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    if stopwords:
        tokens = [t for t in tokens if t not in STOPWORDS_EN]
    return tokens


def _tokenizer(name: str):
    return lambda text: tokenize(text, stopwords=name == "alnum-en-stop")


def okapi_idf(doc_freqs: Sequence[int], n_docs: int, epsilon: float) -> np.ndarray:
    """rank-bm25 BM25Okapi's idf per term (same formula, order of summation and floor)."""
    idf = [math.log(n_docs - df + 0.5) - math.log(df + 0.5) for df in doc_freqs]
    if not idf:
        return np.zeros(0)
    total = 0.0
    for value in idf:  # a plain running sum, as rank-bm25's, so the floor matches to the last bit
        total += value
    floor = epsilon * (total / len(idf))
    return np.array([floor if value < 0 else value for value in idf], dtype=np.float64)


def top_k_matching(scores: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `candidates` (ascending corpus indices) by score desc, then index asc."""
    s = scores[candidates]
    if len(s) > k:
        kth = np.partition(s, len(s) - k)[len(s) - k]  # the k-th largest score
        keep = s >= kth  # every tie of the k-th score survives; the stable sort below cuts by index
        candidates, s = candidates[keep], s[keep]
    order = np.argsort(-s, kind="stable")[:k]
    return candidates[order], s[order]


@dataclass
class _Vocabulary:
    """Token ids (first-appearance order, as rank-bm25's dicts) and the postings for the match rule."""

    ids: dict[str, int]
    doc_tokens: list[list[int]]  # per document, its token ids in text order
    indptr: np.ndarray  # postings of term t: docs[indptr[t]:indptr[t + 1]], ascending, distinct
    docs: np.ndarray

    @classmethod
    def build(cls, token_lists: list[list[str]]) -> "_Vocabulary":
        ids: dict[str, int] = {}
        doc_tokens = [[ids.setdefault(t, len(ids)) for t in tokens] for tokens in token_lists]
        n_docs = len(doc_tokens)
        lengths = np.fromiter((len(d) for d in doc_tokens), dtype=np.int64, count=n_docs)
        flat = np.fromiter((t for d in doc_tokens for t in d), dtype=np.int64, count=int(lengths.sum()))
        pairs = np.unique(flat * n_docs + np.repeat(np.arange(n_docs, dtype=np.int64), lengths))
        terms, docs = np.divmod(pairs, n_docs)
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=len(ids)), out=indptr[1:])
        return cls(ids, doc_tokens, indptr, docs)

    @property
    def doc_freqs(self) -> np.ndarray:
        return np.diff(self.indptr)

    def query_ids(self, tokens: list[str]) -> list[int]:
        """Ids of the query's known tokens, repeats kept (unknown tokens score 0 in both libraries)."""
        return [self.ids[t] for t in tokens if t in self.ids]

    def matching(self, term_ids: list[int], n_docs: int) -> np.ndarray:
        """Ascending indices of the documents that contain at least one of the terms."""
        mask = np.zeros(n_docs, dtype=bool)
        for t in set(term_ids):
            mask[self.docs[self.indptr[t]:self.indptr[t + 1]]] = True
        return np.flatnonzero(mask)


class _Bm25sScorer:
    """bm25s over our token ids; the okapi variant by rescaling each term's column of impacts."""

    def __init__(self, vocab: _Vocabulary, n_docs: int, method: str, k1: float, b: float,
                 epsilon: float, delta: float | None):
        import bm25s

        tf_method, idf_method = ("atire", "lucene") if method == "okapi" else ("bm25+", "bm25+")
        self.model = bm25s.BM25(k1=k1, b=b, delta=0.5 if delta is None else delta, method=tf_method,
                                idf_method=idf_method, dtype="float32", backend="numpy")
        self.model.index((vocab.doc_tokens, dict(vocab.ids)), create_empty_token=False, show_progress=False)
        if method == "okapi":
            index = self.model.scores
            df = np.diff(index["indptr"])
            if not np.array_equal(df, vocab.doc_freqs):
                raise RuntimeError(f"bm25s {_version('bm25s')}: its index layout is not the one this module "
                                   "rescales (document frequencies disagree)")
            # the float32 Lucene idf bm25s multiplied in (always > 0, since df <= N)
            lucene = np.array([np.float32(math.log(1 + (n_docs - f + 0.5) / (f + 0.5))) for f in df],
                              dtype=np.float64)
            factor = okapi_idf(df.tolist(), n_docs, epsilon) / lucene
            index["data"] = (index["data"] * np.repeat(factor, df)).astype(np.float32)

    def scores(self, term_ids: list[int]) -> np.ndarray:
        return np.asarray(self.model.get_scores_from_ids(term_ids), dtype=np.float32)


class _RankBm25Scorer:
    """rank-bm25's BM25Okapi or BM25Plus on the same token lists (float64 scores, rounded to float32)."""

    def __init__(self, token_lists: list[list[str]], method: str, k1: float, b: float, epsilon: float,
                 delta: float | None):
        import rank_bm25

        if method == "okapi":
            self.model = rank_bm25.BM25Okapi(token_lists, k1=k1, b=b, epsilon=epsilon)
        else:
            self.model = rank_bm25.BM25Plus(token_lists, k1=k1, b=b, delta=delta)

    def scores(self, tokens: list[str]) -> np.ndarray:
        return self.model.get_scores(tokens).astype(np.float32)


@dataclass
class _CorpusIndex:
    n_docs: int
    vocab: _Vocabulary
    scorer: _Bm25sScorer | _RankBm25Scorer | None  # None: no document has a token, nothing can match


class BM25Retriever:
    """BM25 over document titles for the evaluation protocol (see the module docstring for the rules)."""

    def __init__(self, backend: str = "bm25s", k1: float = 1.5, b: float = 0.75, method: str = "okapi",
                 tokenizer: str = "alnum", *, epsilon: float = 0.25, delta: float | None = None):
        if backend not in BACKENDS:
            raise GclError(f"unknown BM25 backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if method not in METHODS:
            raise GclError(f"unknown BM25 method {method!r}; expected one of {', '.join(METHODS)}")
        if tokenizer not in TOKENIZERS:
            raise GclError(f"unknown BM25 tokenizer {tokenizer!r}; expected one of {', '.join(TOKENIZERS)}")
        _check_number("k1", k1, low=0.0, strict=True)  # rank-bm25 divides 0 by 0 at k1 = 0
        _check_number("b", b, low=0.0, high=1.0)
        _check_number("epsilon", epsilon, low=0.0)
        if delta is not None:
            if method == "okapi":
                raise GclError("delta applies to method bm25+ only (okapi has epsilon)")
            _check_number("delta", delta, low=0.0)
        self.backend = backend
        self.k1, self.b = float(k1), float(b)
        self.method = method
        self.tokenizer = tokenizer
        self.epsilon = float(epsilon)
        self.delta = (float(delta) if delta is not None else DEFAULT_DELTA) if method == "bm25+" else None
        self._tokenize = _tokenizer(tokenizer)
        self._indexes: dict[tuple[str, str], _CorpusIndex] = {}

    def describe(self) -> dict:
        info = {"preset": "bm25", "family": "bm25", "track": "text", "trains": False, "backend": self.backend,
                "k1": self.k1, "b": self.b, "tokenizer": self.tokenizer, "method": self.method,
                "doc_fields": "title", "backend_version": _version(self.backend)}
        if self.method == "okapi":
            info["epsilon"] = self.epsilon
        else:
            info["delta"] = self.delta
        return info

    def index(self, corpus_name: str, documents: Documents) -> _CorpusIndex:
        """The corpus's index, built on first use and kept for the life of the retriever."""
        key = (corpus_name, _content_key(documents))
        if key not in self._indexes:
            n_docs = len(documents)
            if n_docs == 0:
                raise GclError(f"corpus {corpus_name} is empty: nothing to search (expected at least one document)")
            with status(f"BM25 ({self.backend}): indexing {n_docs:,} titles of {corpus_name}"):
                tokens = [self._tokenize(t) for t in documents.titles()]
                vocab = _Vocabulary.build(tokens)
                if not vocab.ids:
                    scorer = None  # both libraries divide by a zero mean length here
                elif self.backend == "bm25s":
                    scorer = _Bm25sScorer(vocab, n_docs, self.method, self.k1, self.b, self.epsilon, self.delta)
                else:
                    scorer = _RankBm25Scorer(tokens, self.method, self.k1, self.b, self.epsilon, self.delta)
            self._indexes[key] = _CorpusIndex(n_docs, vocab, scorer)
        return self._indexes[key]

    def search(self, split: str, query_texts: Sequence[str], corpus_name: str, documents: Documents,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k corpus row indices (int64, -1 = nothing) and float32 scores per query, best first."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise GclError(f"k must be a positive integer (got {k!r})")
        index = self.index(corpus_name, documents)
        width = min(int(k), index.n_docs)
        indices = np.full((len(query_texts), width), -1, dtype=np.int64)
        scores = np.zeros((len(query_texts), width), dtype=np.float32)
        if index.scorer is None:
            return indices, scores
        rows = track(enumerate(query_texts), f"BM25 ({self.backend}) {split}", total=len(query_texts))
        for row, text in rows:
            tokens = self._tokenize(text)
            term_ids = index.vocab.query_ids(tokens)
            candidates = index.vocab.matching(term_ids, index.n_docs)
            if len(candidates) == 0:
                continue
            if self.backend == "bm25s":
                all_scores = index.scorer.scores(term_ids)
            else:
                all_scores = index.scorer.scores([t for t in tokens if t in index.vocab.ids])
            top, top_scores = top_k_matching(all_scores, candidates, width)
            indices[row, :len(top)] = top
            scores[row, :len(top)] = top_scores
        return indices, scores


def _check_number(name: str, value, *, low: float, high: float | None = None, strict: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
    ok = ok and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low}, {high}]" if high is not None else f"{'>' if strict else '>='} {low}"
        raise GclError(f"BM25 {name} must be a finite number {bounds} (got {value!r})")


def _content_key(documents: Documents) -> str:
    """Hash of doc ids and titles: an index is reused only for the same corpus content."""
    table = documents.table
    h = hashlib.sha1()
    h.update(pd.util.hash_pandas_object(table.index.to_series(), index=False).values.tobytes())
    h.update(pd.util.hash_pandas_object(table["title"].astype(object).where(table["title"].notna(), "\x00"),
                                        index=False).values.tobytes())
    return h.hexdigest()


def _version(backend: str) -> str | None:
    try:
        return version("bm25s" if backend == "bm25s" else "rank-bm25")
    except PackageNotFoundError:
        return None
