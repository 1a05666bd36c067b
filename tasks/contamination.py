"""Is an evaluated question inside training text? n-gram overlap on text normalized for matching.

Knows nothing of training or models: questions and a stream of `TextRecord`s in, `Findings` out.

**Matching text.** Each character on its own: Kangxi radicals and the CJK radical look-alikes the
CMMLU files contain become their ideographs (`normalize_text(c, "kangxi")`), then NFKC (full-width
forms, ligatures, circled digits), then case folding; only letters and digits are kept. Whitespace,
line breaks, punctuation (Chinese and ASCII) and symbols are dropped. This text is for matching
only: scores and reports keep the text as published.

**Tokens.** Every ideograph (any letter of a script written without spaces: Unicode category Lo)
is a token; so is every Latin word or number (a run of other letters and digits, ended by anything
dropped). Chinese is matched character by character, where words are not delimited; an English
term counts as one unit, so `--ngram 13` is 13 Chinese characters or 13 English words, equally
specific. (Counting Latin letters as characters would make "ip access-group" a 13-gram on its own.)

**A question** is its stem and its four options, each a *segment* of tokens. A long segment (at
least n tokens) counts as covered where its n-grams occur in the record; a short one (fewer than n
tokens: 95 of the 574 stems and 79% of the options at n = 13) counts when it occurs whole in the record
near the question's other evidence (the n-gram hits, ± the question's length). A record is looked
at only when some n-gram of the question occurs in it: one of a long segment, or one that crosses
from the stem into the options, with or without option letters, in the benchmark's order (and in
all 24 orders for the 65 questions whose every segment is short: only such n-grams find them).

**The verdict.** `stem_coverage` is the fraction of the stem's tokens covered in one record,
`coverage` the same for the whole question (stem + options). A record contains the question when
stem_coverage ≥ threshold (default 0.9) and either coverage ≥ 0.5 or the covered stem is at least
1.5n tokens long (a stem that long identifies its question without its options). The stem is what
identifies a question: the benchmark's own near-duplicates show it (same stem with reworded or
shuffled options: stem coverage 0.95-1; different questions sharing a preamble or an option list:
0.7-0.81). Options are matched one by one, so reordered options count in full; option letters never
count; a generic short stem (下列说法正确的是) counts only with half of its question around it.

**Speed.** The questions' n-grams are hashed into a sorted table with a bitmap in front; records
are normalized, tokenized, hashed and probed in batches with numpy, and only records that hit are
looked at in Python.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from tasks.data import Question, normalize_text
from tasks.errors import TaskError

METHOD = "devops-eval/contamination/1"
DEFAULT_NGRAM = 13
DEFAULT_THRESHOLD = 0.9  # of the stem
WHOLE_SHARE = 0.5  # of the question with its options, unless the stem is long enough alone
ALONE_STEM = 1.5  # × n tokens: a stem this long identifies its question without its options
NGRAM_RANGE = (4, 64)
MATCHES_KEPT = 10  # matching records listed per question (all are counted)
BATCH_CHARS = 1 << 21  # characters normalized, tokenized and hashed at a time
OPTION_LETTERS = ("a", "b", "c", "d")  # the letters A..D as matching tokens


# --- matching text and tokens --------------------------------------------------------------------


def match_char(c: str) -> str:
    """What one character is in matching text: itself, its ideograph or NFKC form, or nothing."""
    mapped = unicodedata.normalize("NFKC", normalize_text(c, "kangxi")).casefold()
    return "".join(x for x in mapped if x.isalnum())


def stands_alone(c: str) -> bool:
    """A character that is a token by itself: a letter of a script written without spaces (CJK)."""
    return unicodedata.category(c) == "Lo"


class CodeTable:
    """`match_char` and `stands_alone` as numpy lookups by code point, learned as code points appear."""

    UNKNOWN = np.uint32(0xFFFFFFFF)
    EXPANDS = np.uint32(0xFFFFFFFE)  # the character becomes several (ß → ss, ㎏ → kg)

    def __init__(self) -> None:
        self.single = np.full(0x110000, self.UNKNOWN, dtype=np.uint32)  # 0: dropped
        self.length = np.zeros(0x110000, dtype=np.uint8)
        self.alone = np.zeros(0x110000, dtype=bool)  # of matching-text code points
        self.expansions: dict[int, np.ndarray] = {}

    def _learn(self, codes: np.ndarray) -> None:
        for cp in np.unique(codes).tolist():
            out = match_char(chr(cp))
            self.length[cp] = len(out)
            for x in out:
                self.alone[ord(x)] = stands_alone(x)
            if len(out) > 1:
                self.single[cp] = self.EXPANDS
                self.expansions[cp] = np.array([ord(x) for x in out], dtype=np.uint32)
            else:
                self.single[cp] = ord(out) if out else 0

    def normalize(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matching text as code points, how many of them each input code point became)."""
        single = self.single[codes]
        if (single == self.UNKNOWN).any():
            self._learn(codes[single == self.UNKNOWN])
            single = self.single[codes]
        expands = single == self.EXPANDS
        if not expands.any():  # the usual case: every character is one or none
            kept = single != 0
            return single[kept], kept.astype(np.int64)
        lengths = self.length[codes].astype(np.int64)
        out = np.repeat(single, lengths)
        starts = np.cumsum(lengths) - lengths
        for i in np.flatnonzero(expands).tolist():
            out[starts[i] : starts[i] + lengths[i]] = self.expansions[int(codes[i])]
        return out, lengths


def code_points(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate from a JSON escape is a code point like any other here
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


# A token's value: the sum of its code points times a fixed random number per position (mod 2^64).
_POSITION_WEIGHTS = np.random.default_rng(20240601).integers(1, 2**63, 64, dtype=np.uint64) | np.uint64(1)
_POSITION_WEIGHTS[0] = 1  # a one-character token's value is its code point


@dataclass(frozen=True)
class Tokenized:
    """Texts as matching tokens: their values, and where each token's characters came from."""

    values: np.ndarray  # uint64 per token
    starts: np.ndarray  # start of each token in `codes`, then len(codes)
    codes: np.ndarray  # the matching text, concatenated
    source: np.ndarray  # per code of `codes`: the index of the input character it came from
    text_starts: np.ndarray  # first token of each input text, then the token count

    def tokens(self, first: int, last: int) -> list[str]:
        """Tokens first..last-1 as strings."""
        a, b = int(self.starts[first]), int(self.starts[last])
        text = self.codes[a:b].tobytes().decode("utf-32-le", "surrogatepass")
        cuts = (self.starts[first : last + 1] - a).tolist()
        return [text[i:j] for i, j in itertools.pairwise(cuts)]


def tokenize(table: CodeTable, texts: list[str]) -> Tokenized:
    """Cut `texts` into matching tokens; no token spans two texts."""
    raw = code_points("".join(texts))
    codes, lengths = table.normalize(raw)
    ends = np.cumsum(lengths)
    one_each = len(codes) == np.count_nonzero(lengths)  # no character became several
    source = np.flatnonzero(lengths) if one_each else np.repeat(np.arange(len(raw)), lengths)
    first_code = np.concatenate([[0], ends])[np.cumsum([0] + [len(t) for t in texts])]  # where each text starts in `codes`
    alone = table.alone[codes]
    new = np.ones(len(codes), dtype=bool)
    # a token starts at a character that stands alone, after one, after anything dropped, and where a text starts
    new[1:] = alone[1:] | alone[:-1] | (np.diff(source) > 1)
    new[first_code[first_code < len(codes)]] = True
    starts = np.flatnonzero(new)
    offset = np.arange(len(codes)) - np.repeat(starts, np.diff(np.append(starts, len(codes))))
    weighted = codes.astype(np.uint64) * _POSITION_WEIGHTS[offset & 63]
    values = np.add.reduceat(weighted, starts) if len(starts) else np.empty(0, dtype=np.uint64)
    text_starts = np.searchsorted(starts, first_code)
    return Tokenized(values, np.append(starts, len(codes)), codes, source, text_starts)


def match_tokens(text: str, table: CodeTable | None = None) -> list[str]:
    """`text` as its matching tokens."""
    t = tokenize(table or CodeTable(), [text])
    return t.tokens(0, len(t.values))


# --- n-gram hashes -------------------------------------------------------------------------------

_BASE = 0x100000001B3
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _power(k: int) -> np.uint64:
    return np.uint64(pow(_BASE, k, 1 << 64))


def gram_hashes(values: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of every n-gram of token values: element i hashes values[i:i+n]."""
    x = np.asarray(values, dtype=np.uint64)
    if len(x) < n:
        return np.empty(0, dtype=np.uint64)
    # a polynomial by doubling: hash(i, a+b) = hash(i, a) * BASE^b + hash(i+a, b), mod 2^64
    spans = {1: x}
    k = 1
    while 2 * k <= n:
        spans[2 * k] = _joined(spans[k], spans[k], k, k, len(spans[k]) - k)
        k *= 2
    acc, width = None, 0
    for k in sorted(spans, reverse=True):
        if width + k <= n:
            acc, width = (spans[k], k) if acc is None else (_joined(acc, spans[k], width, k, len(x) - width - k + 1), width + k)
    h = acc[: len(x) - n + 1].copy() if acc is x else acc[: len(x) - n + 1]
    h ^= h >> np.uint64(29)  # mix, so that the top bits the bitmap uses depend on every token
    h *= _MIX
    return h


def _joined(left: np.ndarray, right: np.ndarray, width: int, k: int, m: int) -> np.ndarray:
    """Hashes of spans width+k long: left[i] (width long) followed by right[i+width] (k long), m of them."""
    out = np.multiply(left[:m], _power(k))
    out += right[width : width + m]
    return out


# --- the questions' index ------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One question as matched: stem and options as tokens, and the in-order forms."""

    subject: str
    id: int
    segments: tuple[tuple[str, ...], ...]  # stem, then options A..D
    forms: tuple[tuple[str, ...], ...]  # the stem then the options, plain and lettered (see `_forms`)

    @property
    def key(self) -> tuple[str, int]:
        return (self.subject, self.id)

    @property
    def length(self) -> int:
        return sum(len(s) for s in self.segments)


@dataclass(frozen=True)
class QuestionIndex:
    """Every n-gram of every question, hashed: a bitmap to reject most probes, a sorted table to confirm."""

    ngram: int
    items: tuple[Item, ...]
    hashes: np.ndarray  # sorted, unique
    entries: dict[int, list[tuple[int, int, int]]]  # hash -> (item, part, offset); part < 0: form -part-1
    bitmap: np.ndarray
    unmatchable: tuple[tuple[str, int], ...]  # questions with no n-gram at all (shorter than n)

    BITMAP_BITS = 22

    def probe(self, hashes: np.ndarray) -> np.ndarray:
        """Positions in `hashes` that hold the hash of some question's n-gram."""
        maybe = np.flatnonzero(self.bitmap[hashes >> np.uint64(64 - self.BITMAP_BITS)])
        if not len(maybe) or not len(self.hashes):
            return maybe[:0]
        found = hashes[maybe]
        at = np.minimum(np.searchsorted(self.hashes, found), len(self.hashes) - 1)
        return maybe[self.hashes[at] == found]


ORDERS = tuple(itertools.permutations(range(4)))  # the benchmark's order first


def _forms(segments, letters, orders) -> list[list]:
    """The stem followed by the options in each of `orders`: plain, then lettered A..D."""
    stem, options = list(segments[0]), segments[1:]
    out = []
    for order in orders:
        out.append(stem + [x for i in order for x in options[i]])
        out.append(stem + [x for letter, i in zip(letters, order) for x in (letter, *options[i])])
    return out


def check_settings(ngram: int, threshold: float) -> None:
    lo, hi = NGRAM_RANGE
    if not lo <= ngram <= hi:
        raise TaskError(f"--ngram {ngram}: choose between {lo} and {hi} tokens (default {DEFAULT_NGRAM})")
    if not 0 < threshold <= 1:
        raise TaskError(f"--threshold {threshold:g}: the share of a question's stem that must be found, in (0, 1] (default {DEFAULT_THRESHOLD:g})")


def build_index(questions: Iterable[Question], ngram: int = DEFAULT_NGRAM, table: CodeTable | None = None) -> QuestionIndex:
    """The n-gram index of `questions` (a few hundred: small enough to hold anything we like)."""
    check_settings(ngram, DEFAULT_THRESHOLD)
    questions, table = list(questions), table or CodeTable()
    t = tokenize(table, [text for q in questions for text in (q.question, *q.options)])
    letters = [int(v) for v in tokenize(table, list(OPTION_LETTERS)).values]
    items, entries, unmatchable = [], {}, []

    def add(values: list[int], item: int, part: int, first: int = 0) -> int:
        hashes = gram_hashes(np.array(values, dtype=np.uint64), ngram).tolist()
        for offset in range(first, len(hashes)):
            entries.setdefault(hashes[offset], []).append((item, part, offset))
        return max(0, len(hashes) - first)

    for i, q in enumerate(questions):
        bounds = t.text_starts[5 * i : 5 * i + 6].tolist()
        segments = tuple(tuple(t.tokens(a, b)) for a, b in itertools.pairwise(bounds))
        values = [t.values[a:b].tolist() for a, b in itertools.pairwise(bounds)]
        added = sum(add(v, i, part) for part, v in enumerate(values))
        # Nothing n tokens long: only n-grams across the stem and the options find it, whatever their order.
        orders = ORDERS if all(len(v) < ngram for v in values) else ORDERS[:1]
        forms = _forms(segments, OPTION_LETTERS, orders)
        stem = len(values[0])
        for f, form in enumerate(_forms(values, letters, orders)):
            # new n-grams only: those across the stem's end (and, in the benchmark's order, across options)
            last = len(form) - ngram + 1 if f < 2 else min(stem, len(form) - ngram + 1)
            added += add(form[:last + ngram - 1], i, -f - 1, max(0, stem - ngram + 1))
        items.append(Item(q.subject, q.id, segments, tuple(tuple(x) for x in forms)))
        if not added:
            unmatchable.append((q.subject, q.id))
    hashes = np.array(sorted(entries), dtype=np.uint64)
    bitmap = np.zeros(1 << QuestionIndex.BITMAP_BITS, dtype=bool)
    bitmap[hashes >> np.uint64(64 - QuestionIndex.BITMAP_BITS)] = True
    return QuestionIndex(ngram, tuple(items), hashes, entries, bitmap, tuple(unmatchable))


# --- training records, and what is found in them -------------------------------------------------


@dataclass(frozen=True)
class TextRecord:
    """One training record: where it is, and its text fields in the order training reads them.

    `record` is the 0-based record index in `file`, `line` the 1-based line it starts on. A record
    too long to hold comes in windows: `offset` is where this window starts in the record's text.
    """

    file: str
    record: int
    line: int
    fields: tuple[tuple[str, str], ...]  # (field name, text)
    dataset: str | None = None
    offset: int = 0

    @property
    def text(self) -> str:
        """The record's text as spans refer to it: its fields joined by newlines."""
        return "\n".join(text for _, text in self.fields)


@dataclass(frozen=True)
class Match:
    """A question found in a training record: where, how much of it, and the span of record text."""

    subject: str
    id: int
    file: str
    record: int
    line: int
    dataset: str | None
    coverage: float  # of the question's tokens, stem and options
    stem_coverage: float
    start: int  # span in the record's text (fields joined by newlines), end exclusive
    end: int
    fields: tuple[str, ...]  # the fields the span touches
    excerpt: str


@dataclass(frozen=True)
class SourceStats:
    records: int = 0
    chars: int = 0


@dataclass
class Findings:
    """What a scan found: per question, the records that contain it, and the closest misses."""

    ngram: int
    threshold: float
    questions: dict[str, int]  # subject -> questions checked, in the questions' order
    unmatchable: tuple[tuple[str, int], ...]
    found: dict[tuple[str, int], list[Match]] = field(default_factory=dict)  # the first MATCHES_KEPT
    found_count: dict[tuple[str, int], int] = field(default_factory=dict)
    closest_miss: dict[tuple[str, int], Match] = field(default_factory=dict)  # best below the threshold
    sources: dict[str, SourceStats] = field(default_factory=dict)

    @property
    def contaminated(self) -> bool:
        return bool(self.found)

    def found_in(self, subject: str) -> list[tuple[str, int]]:
        return sorted(k for k in self.found if k[0] == subject)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sources.values())

    @property
    def chars(self) -> int:
        return sum(s.chars for s in self.sources.values())


def scan(questions: Iterable[Question], records: Iterable[TextRecord], ngram: int = DEFAULT_NGRAM,
         threshold: float = DEFAULT_THRESHOLD) -> Findings:
    """Look for every question in every record; records stream through in batches."""
    check_settings(ngram, threshold)
    questions = list(questions)
    table = CodeTable()
    index = build_index(questions, ngram, table)
    counts: dict[str, int] = {}
    for q in questions:
        counts[q.subject] = counts.get(q.subject, 0) + 1
    findings = Findings(ngram, threshold, counts, index.unmatchable)
    for batch in _batches(records, findings):
        _scan_batch(index, table, batch, findings)
    return findings


def _batches(records: Iterable[TextRecord], findings: Findings) -> Iterator[list[TextRecord]]:
    batch, size, counts = [], 0, {}
    for r in records:
        n = sum(len(t) for _, t in r.fields)
        c = counts.get(r.file)
        if c is None:
            c = counts[r.file] = [0, 0]
        c[0] += r.offset == 0  # the windows of a long record are one record
        c[1] += n
        batch.append(r)
        size += n
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
    for file, (count, chars) in counts.items():
        findings.sources[file] = SourceStats(count, chars)


def _scan_batch(index: QuestionIndex, table: CodeTable, batch: list[TextRecord], findings: Findings) -> None:
    n = index.ngram
    t = tokenize(table, [text for r in batch for _, text in r.fields])
    field_counts = np.cumsum([len(r.fields) for r in batch])
    record_ends = t.text_starts[field_counts]  # token after each record's last
    record_starts = np.concatenate([[0], record_ends[:-1]])
    hashes = gram_hashes(t.values, n)
    hits = index.probe(hashes)
    if not len(hits):
        return
    owner = np.searchsorted(record_ends, hits, side="right")
    candidates: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for pos, rec, h in zip(hits.tolist(), owner.tolist(), hashes[hits].tolist()):
        if pos + n > record_ends[rec]:
            continue  # an n-gram across two records
        for item, part, offset in index.entries[h]:
            candidates.setdefault((rec, item), []).append((pos - int(record_starts[rec]), part, offset))
    char_starts = np.concatenate([[0], np.cumsum([len(text) for r in batch for _, text in r.fields])])
    record_char_starts = char_starts[np.concatenate([[0], field_counts[:-1]])]
    for (rec, item), item_hits in candidates.items():
        first, last = int(record_starts[rec]), int(record_ends[rec])
        judged = judge(index.items[item], t.tokens(first, last), item_hits, n)
        if judged is None:
            continue
        # the span back in the record's own characters
        a, b = int(t.starts[first + judged.start]), int(t.starts[first + judged.end]) - 1
        span = (int(t.source[a] - record_char_starts[rec]), int(t.source[b] - record_char_starts[rec]) + 1)
        _record(findings, index.items[item], batch[rec], judged, span)


@dataclass(frozen=True)
class Judgement:
    coverage: float
    stem_coverage: float
    stem_covered: int  # tokens
    start: int  # token span in the record
    end: int


def judge(item: Item, tokens: list[str], hits: list[tuple[int, int, int]], n: int) -> Judgement | None:
    """How much of `item` a record's `tokens` hold, given the n-gram hits found in them."""
    covered = [bytearray(len(s)) for s in item.segments]
    anchors = []
    for pos, part, offset in hits:
        source = item.segments[part] if part >= 0 else item.forms[-part - 1]
        if tuple(tokens[pos : pos + n]) != source[offset : offset + n]:
            continue  # a hash collision
        anchors.append(pos)
        if part >= 0:
            covered[part][offset : offset + n] = b"\x01" * n
    if not anchors:
        return None
    spans = [(min(anchors), max(anchors) + n)]
    near = range(max(0, spans[0][0] - item.length), min(len(tokens), spans[0][1] + item.length))
    for part, segment in enumerate(item.segments):
        if 0 < len(segment) < n and not all(covered[part]):
            at = _find(tokens, segment, near)
            if at is not None:
                covered[part][:] = b"\x01" * len(segment)
                spans.append((at, at + len(segment)))
    stem = sum(covered[0])
    return Judgement(
        coverage=sum(map(sum, covered)) / item.length,
        stem_coverage=stem / len(item.segments[0]) if item.segments[0] else 0.0,
        stem_covered=stem,
        start=min(s for s, _ in spans),
        end=max(e for _, e in spans),
    )


def _find(tokens: list[str], segment: tuple[str, ...], within: range) -> int | None:
    first, k = segment[0], len(segment)
    for i in range(within.start, within.stop - k + 1):
        if tokens[i] == first and tuple(tokens[i : i + k]) == segment:
            return i
    return None


def alone_stem_tokens(n: int) -> int:
    """How many stem tokens identify a question without its options."""
    return math.ceil(ALONE_STEM * n)


def contains(j: Judgement, n: int, threshold: float) -> bool:
    """The verdict: most of the stem, with half of the question around it or a stem long enough alone."""
    return j.stem_coverage >= threshold and (j.coverage >= WHOLE_SHARE or j.stem_covered >= alone_stem_tokens(n))


EXCERPT_CHARS = 160


def _record(findings: Findings, item: Item, record: TextRecord, j: Judgement, span: tuple[int, int]) -> None:
    match = _match(item, record, j, span)
    key = item.key
    if contains(j, findings.ngram, findings.threshold):
        findings.found_count[key] = findings.found_count.get(key, 0) + 1
        kept = findings.found.setdefault(key, [])
        if len(kept) < MATCHES_KEPT:
            kept.append(match)
        return
    best = findings.closest_miss.get(key)
    if best is None or (match.stem_coverage, match.coverage) > (best.stem_coverage, best.coverage):
        findings.closest_miss[key] = match


def _match(item: Item, record: TextRecord, j: Judgement, span: tuple[int, int]) -> Match:
    """The match, its span moved from the concatenated fields to the record's text (fields + newlines)."""
    first, end = span
    bounds, pos = [], 0
    for _, text in record.fields:
        bounds.append((pos, pos + len(text)))
        pos += len(text)
    fields = tuple(name for (name, _), (a, b) in zip(record.fields, bounds) if a < end and first < b)
    start = first + sum(1 for _, b in bounds if b <= first)  # one newline after each earlier field
    stop = end + sum(1 for _, b in bounds if b < end)
    excerpt = record.text[start:stop]
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[: EXCERPT_CHARS - 1] + "…"
    return Match(
        subject=item.subject,
        id=item.id,
        file=record.file,
        record=record.record,
        line=record.line,
        dataset=record.dataset,
        coverage=round(j.coverage, 4),
        stem_coverage=round(j.stem_coverage, 4),
        start=record.offset + start,
        end=record.offset + stop,
        fields=fields,
        excerpt=excerpt,
    )
