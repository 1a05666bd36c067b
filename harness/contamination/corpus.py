"""Training files read as a stream of text records: txt (a record per line), jsonl, json (an array of
records, JSON Lines, or one document), csv (a header, then a record per row).

Never a whole file in memory: one record at a time, and a txt line longer than `WINDOW` characters
in overlapping windows. Errors name the file and the line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from tasks.contamination import TextRecord

KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
WINDOW = 1 << 20  # characters of a long txt line read at a time
OVERLAP = 1 << 13  # characters each window repeats from the one before (a question is far shorter)
CHUNK = 1 << 20  # characters a JSON array is read by
MAX_RECORD = 1 << 28  # characters one JSON array element may take


class CorpusError(HarnessError):
    """A training file that cannot be read as records: names the file and the line."""


@dataclass(frozen=True)
class CorpusFile:
    """A file to scan; `columns`: the fields read from each record (None: every text field).
    `optional`: those of `columns` a csv file may lack (training reads them only where present)."""

    path: Path
    kind: str
    columns: tuple[str, ...] | None = None
    dataset: str | None = None
    optional: tuple[str, ...] = ()


def corpus_files(paths: list[str]) -> list[CorpusFile]:
    """The files named by `paths`; a directory gives the txt/json/jsonl/csv files below it."""
    out = []
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KINDS)
            if not found:
                raise CorpusError(f"{path} holds no {', '.join(KINDS)} files")
            out += [CorpusFile(p, KINDS[p.suffix.lower()]) for p in found]
        elif path.is_file():
            kind = KINDS.get(path.suffix.lower())
            if kind is None:
                raise CorpusError(f"{path}: cannot read {path.suffix or 'extensionless'} files; give txt, json, jsonl or csv")
            out.append(CorpusFile(path, kind))
        else:
            raise CorpusError(f"no such file or directory: {path}")
    return out


def read_records(f: CorpusFile) -> Iterator[TextRecord]:
    """The records of one file, as they are read."""
    readers = {"txt": _txt, "jsonl": _json_lines, "json": _json, "csv": _csv}
    try:
        with open(f.path, encoding="utf-8-sig", newline="" if f.kind == "csv" else None) as stream:
            yield from readers[f.kind](stream, f)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{f.path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise CorpusError(f"cannot read {f.path}: {e.strerror or e}") from None


def _record(f: CorpusFile, index: int, line: int, fields, offset: int = 0) -> TextRecord:
    return TextRecord(str(f.path), index, line, tuple(fields), f.dataset, offset)


def _txt(stream, f: CorpusFile) -> Iterator[TextRecord]:
    name = (f.columns or ("text",))[0]
    index, line, offset, tail = 0, 1, 0, ""
    while True:
        chunk = stream.readline(WINDOW)
        if not chunk:
            return
        ends = chunk.endswith("\n")
        text = chunk.rstrip("\r\n") if ends else chunk
        if tail or text.strip():
            yield _record(f, index, line, [(name, tail + text)], offset - len(tail))
        if ends:
            index, line, offset, tail = index + 1, line + 1, 0, ""
        else:  # the line goes on: the next window starts with this one's end
            offset += len(text)
            tail = (tail + text)[-OVERLAP:]


def _fields(f: CorpusFile, value, where: str) -> list[tuple[str, str]]:
    """The text of a record: the named columns, or every string in it (nested ones joined by newlines)."""
    if not isinstance(value, dict):
        if f.columns:
            raise CorpusError(f"{where}: a {type(value).__name__}, expected an object with {', '.join(f.columns)}")
        return [("text", text)] if (text := _strings(value)) else []
    keys = f.columns if f.columns else list(value)
    return [(k, text) for k in keys if (text := _strings(value.get(k)))]


def _strings(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return "\n".join(s for v in value if (s := _strings(v)))
    return ""  # numbers, booleans, null: not text anyone trains on


def _json_lines(stream, f: CorpusFile) -> Iterator[TextRecord]:
    index = 0
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{f.path} line {line}: not JSON ({e.msg}, column {e.colno})") from None
        yield _record(f, index, line, _fields(f, value, f"{f.path} line {line}"))
        index += 1


def _json(stream, f: CorpusFile) -> Iterator[TextRecord]:
    """A JSON array, element by element, without reading the whole file; else JSON Lines."""
    head = stream.read(CHUNK)
    if not head.lstrip().startswith("["):
        stream.seek(0)
        if _first_line_is_json(head):
            yield from _json_lines(stream, f)
        else:  # JSON documents over several lines each (usually one): a record each
            ahead, index = _ReadAhead(stream, stream.read(CHUNK), f.path), 0
            while ahead.skip_space() is not None:
                line = ahead.line
                yield _record(f, index, line, _fields(f, ahead.value(), f"{f.path} line {line}"))
                index += 1
        return
    ahead = _ReadAhead(stream, head, f.path)
    ahead.skip_space()
    ahead.advance(ahead.pos + 1)  # the [
    c, index = ahead.skip_space(), 0
    while c != "]":
        if c is None:
            raise CorpusError(f"{f.path} line {ahead.line}: the JSON array is not closed with ]")
        line = ahead.line
        value = ahead.value()
        yield _record(f, index, line, _fields(f, value, f"{f.path} record {index} (line {line})"))
        index += 1
        c = ahead.skip_space()
        if c == ",":
            ahead.advance(ahead.pos + 1)
            c = ahead.skip_space()
        elif c != "]":
            raise CorpusError(f"{f.path} line {ahead.line}: expected , or ] after record {index - 1}")
    ahead.advance(ahead.pos + 1)
    if ahead.skip_space() is not None:
        raise CorpusError(f"{f.path} line {ahead.line}: text after the end of the JSON array")


def _first_line_is_json(head: str) -> bool:
    line = next((x for x in head.splitlines() if x.strip()), "")
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


class _ReadAhead:
    """A text stream read into a buffer as far as needed, knowing the line of its read position."""

    def __init__(self, stream, text: str, path: Path):
        self.stream, self.buf, self.pos, self.line, self.eof, self.path = stream, text, 0, 1, False, path

    def more(self) -> bool:
        # at least doubling what is held: a huge record costs O(n log n) to read, not O(n^2)
        text = self.stream.read(max(CHUNK, len(self.buf) - self.pos))
        if not text:
            self.eof = True
            return False
        self.buf, self.pos = self.buf[self.pos :] + text, 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def skip_space(self) -> str | None:
        """The next character that is not white space (not consumed); None at the end of the file."""
        while True:
            end = self.pos
            while end < len(self.buf) and self.buf[end] in " \t\r\n":
                end += 1
            self.advance(end)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def value(self):
        """The JSON value at the read position, consumed."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if len(self.buf) - self.pos < MAX_RECORD and self.more():
                    continue  # maybe only cut short by the buffer
                line = self.line + self.buf.count("\n", self.pos, e.pos)
                why = "" if self.eof else f", or a record over {MAX_RECORD} characters"
                raise CorpusError(f"{self.path} line {line}: not JSON ({e.msg}{why})") from None
            if end < len(self.buf) or self.eof:
                break
            self.more()  # a value that ends where the buffer does (a number) may go on: decode it again
        self.advance(end)
        return value


_DECODER = json.JSONDecoder()


def _csv(stream, f: CorpusFile) -> Iterator[TextRecord]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a cell may hold a whole document
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        wanted = f.columns or tuple(header)
        missing = [c for c in wanted if c not in header and c not in f.optional]
        if f.columns and missing:
            raise CorpusError(f"{f.path}: no column {missing[0]!r} (its columns: {', '.join(header)})")
        at = {c: header.index(c) for c in wanted if c in header}
        line = reader.line_num + 1
        for index, row in enumerate(reader):
            if len(row) != len(header) and any(row):
                raise CorpusError(f"{f.path} record {index} (line {line}): {len(row)} fields, the header has {len(header)}")
            if any(row):
                yield _record(f, index, line, [(c, row[i]) for c, i in at.items() if row[i]])
            line = reader.line_num + 1
    except csv.Error as e:
        raise CorpusError(f"{f.path} line {reader.line_num}: malformed CSV ({e})") from None
