"""The measures, defined once as named objects, and the parsing of their names.

As in ir_measures, a measure is a family with its parameters, and its str() is its canonical name:

    nDCG@10, ERR, ERR@10, RBP(p=0.9), MAP@1000, MRR@1000, R@100, P@10

are Python expressions over the family objects below (`nDCG @ 10` sets the cutoff k, `RBP(p=0.9)` the
persistence p) and also the names `parse_measure` reads. Results are keyed by `Measure.name`: the
spelling the caller gave ("RBP(p=.9)" stays "RBP(p=.9)"), the canonical name for a measure built in code.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from gcl_eval.util.errors import GclError

KNOWN_MEASURES: dict[str, str] = {
    "nDCG@k": "normalised DCG at cutoff k: gain g / log2(rank + 1), ideal from the query's judged grades",
    "ERR": "expected reciprocal rank over the whole retrieved list",
    "ERR@k": "expected reciprocal rank cut at rank k",
    "RBP(p=x)": "rank-biased precision with persistence 0 < x < 1, over the whole retrieved list",
    "MAP@k": "average precision cut at k; denominator = all relevant documents of the query",
    "MRR@k": "reciprocal rank of the first relevant document within the top k (binary relevance)",
    "R@k": "recall at k: relevant retrieved in the top k / all relevant documents of the query",
    "P@k": "precision at k: relevant retrieved in the top k / k",
}
"""The measure forms `parse_measure` accepts (k a positive integer), with one line on each."""

CUTOFF_REQUIRED = ("nDCG", "MAP", "MRR", "R", "P")  # families measured only down to a cutoff k
CUTOFF_OPTIONAL = ("ERR",)  # without k: the whole retrieved list
PERSISTENCE = ("RBP",)  # take p instead of a cutoff, always over the whole list
FAMILIES = CUTOFF_REQUIRED + CUTOFF_OPTIONAL + PERSISTENCE

_KNOWN_FORMS_LINE = ", ".join(KNOWN_MEASURES) + " (k a positive integer, 0 < x < 1)"
_CUTOFF_RE = re.compile(r"(nDCG|ERR|MAP|MRR|R|P)@([1-9][0-9]*)")
_RBP_RE = re.compile(r"RBP\(p=([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\)")


def _unknown(name: object, why: str = "unknown measure") -> GclError:
    return GclError(f"{why} {name!r}; known forms: {_KNOWN_FORMS_LINE}")


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Measure:
    """A measure family with its parameters; equal measures have equal parameters, whatever the spelling.

    `nDCG @ 10` and `RBP(p=0.9)` give the measure with that parameter set. A family object without its
    required parameter (`nDCG`, `RBP`) is not a complete measure: `parse_measure` rejects it.
    """

    family: str  # one of FAMILIES
    k: int | None = None  # rank cutoff; None = the whole retrieved list (ERR, RBP)
    p: float | None = None  # RBP persistence
    name: str = field(default="", compare=False)  # the key of its results; "" = the canonical name

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise _unknown(self.family, "unknown measure family")
        if self.k is not None:
            spelled = self.name or f"{self.family}@{self.k!r}"
            if self.family in PERSISTENCE:
                raise _unknown(spelled, f"{self.family} takes no cutoff:")
            if not _is_integer(self.k) or self.k < 1:
                raise _unknown(spelled, "a cutoff must be a positive integer in")
            object.__setattr__(self, "k", int(self.k))
        if self.p is not None:
            spelled = self.name or f"{self.family}(p={self.p!r})"
            if self.family not in PERSISTENCE:
                raise _unknown(spelled, f"{self.family} takes no persistence p:")
            if not _is_real(self.p) or not 0.0 < self.p < 1.0:
                raise _unknown(spelled, "RBP needs 0 < p < 1 in")
            object.__setattr__(self, "p", float(self.p))
        if not self.name:
            object.__setattr__(self, "name", self.canonical_name)

    @property
    def canonical_name(self) -> str:
        if self.p is not None:
            return f"{self.family}(p={self.p!r})"
        return self.family if self.k is None else f"{self.family}@{self.k}"

    @property
    def is_complete(self) -> bool:
        """Whether every required parameter is set (a cutoff for nDCG, MAP, MRR, R, P; p for RBP)."""
        if self.family in CUTOFF_REQUIRED:
            return self.k is not None
        return self.p is not None if self.family in PERSISTENCE else True

    def __matmul__(self, k: int) -> Measure:
        """`nDCG @ 10`: this family cut at rank k."""
        return dataclasses.replace(self, k=k, name="")

    def __call__(self, *, p: float) -> Measure:
        """`RBP(p=0.9)`: this family with persistence p."""
        return dataclasses.replace(self, p=p, name="")

    def __str__(self) -> str:
        return self.canonical_name

    __repr__ = __str__


nDCG = Measure("nDCG")
ERR = Measure("ERR")
RBP = Measure("RBP")
MAP = Measure("MAP")
MRR = Measure("MRR")
R = Measure("R")
P = Measure("P")

PAPER_MEASURES: tuple[str, ...] = tuple(map(str, (nDCG @ 10, ERR, RBP(p=0.9))))
"""The measures the paper reports: the default of compare, gate, metrics and the result tables."""

RUN_MEASURES: tuple[str, ...] = (
    *PAPER_MEASURES,
    *map(str, (RBP(p=0.8), RBP(p=0.7), MAP @ 1000, MRR @ 1000, R @ 10, R @ 100, P @ 10)),
)
"""Everything an evaluation run computes and records, the paper's measures first."""


def parse_measure(name: str | Measure) -> Measure:
    """Parse one ir_measures-style name such as "nDCG@10" or "RBP(p=0.9)"; GclError if malformed.

    A Measure is returned as it is once it is checked to be complete.
    """
    if isinstance(name, Measure):
        if not name.is_complete:
            raise _unknown(name.name, "incomplete measure")
        return name
    if not isinstance(name, str):
        raise _unknown(name, "a measure name must be a string, got")
    if name == "ERR":
        return ERR
    match = _CUTOFF_RE.fullmatch(name)
    if match:
        return Measure(match.group(1), k=int(match.group(2)), name=name)
    match = _RBP_RE.fullmatch(name)
    if match:
        return Measure("RBP", p=float(match.group(1)), name=name)
    raise _unknown(name)


def parse_measures(measures: str | Measure | Iterable[str | Measure]) -> tuple[Measure, ...]:
    """Parse a name or a list of names; duplicate names are dropped, order kept; an empty list is an error."""
    if isinstance(measures, (str, Measure)):
        measures = [measures]
    parsed: dict[str, Measure] = {}
    for name in measures:
        measure = parse_measure(name)
        parsed.setdefault(measure.name, measure)
    if not parsed:
        raise GclError(f"no measure given; known forms: {_KNOWN_FORMS_LINE}")
    return tuple(parsed.values())


def measure_names(measures: str | Measure | Iterable[str | Measure]) -> list[str]:
    """The validated output keys for `measures`, in order, without duplicates."""
    return [m.name for m in parse_measures(measures)]
