"""Questions of the subjects, read from a local directory (a tasks file's subjects: from its own
files) or the Hugging Face Hub.

Every cell is kept as the exact published string: no NaN, no numeric coercion, no stripping.
Counts are checked (a wrong count is an error); file hashes are compared with the published
ones (a different copy is a warning, since a user may knowingly use a revised file).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import unicodedata
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.errors import TaskError, first_line
from tasks.registry import GROUP, LETTERS, Benchmark, Registry, Subject, builtin_registry, select_subjects

log = logging.getLogger("harness")

NORMALIZATIONS = ("none", "kangxi", "nfkc")
# Kangxi radicals and CJK radicals supplement: PDF-extracted look-alikes of ordinary ideographs.
_KANGXI_RANGES = ((0x2E80, 0x2EFF), (0x2F00, 0x2FDF))
# Supplement radicals that NFKC leaves alone but the CMMLU files use in place of ideographs.
_RADICAL_IDEOGRAPHS = str.maketrans({"⻅": "见", "⻆": "角", "⻓": "长", "⻔": "门", "⻚": "页"})


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; `id` is its 0-based record index in its split file."""

    subject: str
    id: int
    question: str
    options: tuple[str, str, str, str]
    answer: str


@dataclass(frozen=True)
class SubjectData:
    """The scored questions of one subject and its few-shot pool (file order), with provenance."""

    subject: Subject
    questions: tuple[Question, ...]
    shots: tuple[Question, ...]
    # split -> where it came from and its content hash
    sources: dict[str, dict]


def normalize_text(text: str, mode: str) -> str:
    """Text as published (`none`), Kangxi look-alikes mapped to ideographs (`kangxi`), or full NFKC."""
    if mode == "none":
        return text
    if mode == "nfkc":
        return unicodedata.normalize("NFKC", text)
    if mode == "kangxi":
        return "".join(
            unicodedata.normalize("NFKC", ch)
            if any(lo <= ord(ch) <= hi for lo, hi in _KANGXI_RANGES)
            else ch
            for ch in text.translate(_RADICAL_IDEOGRAPHS)
        )
    raise TaskError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")


def _normalized(q: Question, mode: str) -> Question:
    if mode == "none":
        return q
    return replace(
        q,
        question=normalize_text(q.question, mode),
        options=tuple(normalize_text(o, mode) for o in q.options),
    )


def parse_csv(raw: bytes, name: str, subject: Subject, split: str | None = None) -> tuple[Question, ...]:
    """Parse one split file of `subject`'s benchmark; `name` is how errors refer to the file, `split`
    which of its empty option cells `subject` declares."""
    bench = subject.benchmark
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    # newline="" keeps line breaks inside quoted cells exactly as written (LF or CRLF).
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise TaskError(f"{name}: empty file, expected the header {','.join(bench.header)}")
        _check_header(header, bench, name)
        col = {c: i for i, c in enumerate(header)}
        questions = []
        for index, row in enumerate(reader):
            q = _question(row, index, reader.line_num, header, col, bench, name, subject)
            _check_options(q, f"{name} record {index} (line {reader.line_num})", subject, split)
            questions.append(q)
    except csv.Error as e:
        raise TaskError(f"{name} line {reader.line_num}: malformed CSV ({e})") from None
    return tuple(questions)


def _check_header(header: list[str], bench: Benchmark, name: str) -> None:
    expected = list(bench.header)
    allowed = [expected] + [expected + [c] for c in bench.optional_columns]
    if header not in allowed:
        raise TaskError(
            f"{name}: unexpected header {','.join(header)!r}; expected {','.join(expected)!r}"
        )


def _question(row, index, line, header, col, bench, name, subject) -> Question:
    where = f"{name} record {index} (line {line})"
    if len(row) != len(header):
        raise TaskError(f"{where}: {len(row)} fields, expected {len(header)}")
    answer = row[col[bench.answer_column]]
    if answer not in LETTERS:
        raise TaskError(f"{where}: answer {answer!r} is not one of A, B, C, D")
    question = row[col[bench.question_column]]
    if not question.strip():
        raise TaskError(f"{where}: empty question")
    return Question(
        subject=subject.key,
        id=index,
        question=question,
        options=tuple(row[col[letter]] for letter in LETTERS),
        answer=answer,
    )


def _check_options(q: Question, where: str, subject: Subject, split: str | None) -> None:
    for letter, option in zip(LETTERS, q.options):
        if not option.strip() and (split, q.id, letter) not in subject.empty_options:
            raise TaskError(
                f"{where}: empty option in column {letter}; fill it, or declare it in tasks/subjects.yaml (empty_options)"
            )


def parse_jsonl(raw: bytes, name: str, subject: Subject, split: str | None = None) -> tuple[Question, ...]:
    """Parse one split file of a JSONL benchmark: an object per line with the question, the four
    options (fields A..D, or one list field) and the answer letter."""
    bench = subject.benchmark
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    questions = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} record {len(questions)} (line {line_number})"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise TaskError(f"{where}: not a JSON object")
        if bench.options_field:
            options = row.get(bench.options_field)
            if not isinstance(options, list) or len(options) != len(LETTERS):
                raise TaskError(f"{where}: {bench.options_field!r} must be a list of four options")
        else:
            missing = [c for c in LETTERS if c not in row]
            if missing:
                raise TaskError(f"{where}: missing field {missing[0]!r} (options are fields A, B, C, D, or declare columns: options:)")
            options = [row[c] for c in LETTERS]
        for column in (bench.question_column, bench.answer_column):
            if column not in row:
                raise TaskError(f"{where}: missing field {column!r}")
        cells = [row[bench.question_column], *options, row[bench.answer_column]]
        if not all(isinstance(c, str) for c in cells):
            raise TaskError(f"{where}: question, options and answer must be text")
        answer = row[bench.answer_column]
        if answer not in LETTERS:
            raise TaskError(f"{where}: answer {answer!r} is not one of A, B, C, D")
        if not row[bench.question_column].strip():
            raise TaskError(f"{where}: empty question")
        q = Question(subject.key, len(questions), row[bench.question_column], tuple(options), answer)
        _check_options(q, where, subject, split)
        questions.append(q)
    return tuple(questions)


def parse_file(raw: bytes, name: str, subject: Subject, split: str | None = None) -> tuple[Question, ...]:
    """One split file in its benchmark's layout (CSV or JSONL)."""
    if subject.benchmark.layout == "jsonl":
        return parse_jsonl(raw, name, subject, split)
    return parse_csv(raw, name, subject, split)


def _check_count(questions, subject: Subject, split: str, name: str) -> None:
    if split == subject.split and not questions:
        raise TaskError(f"{name}: no questions in the evaluated split")
    if split == subject.split and subject.count is not None and len(questions) != subject.count:
        raise TaskError(
            f"{name}: {len(questions)} questions, expected {subject.count} "
            f"({subject.benchmark.title} {subject.key} {split})"
        )
    if split == subject.fewshot_split and not questions:
        raise TaskError(f"{name}: no rows in the few-shot split")


def content_digest(questions) -> str:
    """sha256 of the parsed cells (question, options, answer per row): the same for every copy of
    the same questions, whatever its bytes (CRLF or LF, CSV or parquet). Runs compare on it."""
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.question, *q.options, q.answer], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _source(questions, subject: Subject, split: str, name: str, raw: bytes | None, **where) -> dict:
    """Where a split came from and its digests; a copy unlike the published one is warned about."""
    source = dict(where)
    if raw is not None:
        source["sha256"] = hashlib.sha256(raw).hexdigest()
    source["content_sha256"] = content_digest(questions)
    for key, published in (("sha256", subject.sha256.get(split)), ("content_sha256", subject.content_sha256.get(split))):
        if key in source and published and source[key] != published:
            log.warning(
                "%s differs from the published file (%s %s…, published %s…); "
                "scores may not be comparable with other runs",
                name, key, source[key][:12], published[:12],
            )
            break
    return source


def load_local(data_dir: str | Path | None, subjects, normalize: str = "none") -> list[SubjectData]:
    """Read each subject's eval and few-shot splits from `data_dir` in the benchmarks' own layouts
    (a tasks file's subjects from where their file declares)."""
    normalize_text("", normalize)  # reject an unknown mode before touching files
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise TaskError(f"data directory not found: {root}")
    out = []
    for subject in subjects:
        if root is None and subject.benchmark.root is None:
            raise TaskError(f"{subject.key}: no data directory given (--data-dir) to read it from")
        splits, sources = {}, {}
        for split in (subject.split, subject.fewshot_split):
            rel = subject.local_file(split)
            path = root / rel if subject.benchmark.root is None else Path(rel)
            if not path.is_file():
                raise TaskError(f"missing data file: {path}")
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise TaskError(f"cannot read {path}: {e.strerror or e}") from None
            questions = parse_file(raw, str(path), subject, split)
            _check_count(questions, subject, split, str(path))
            sources[split] = _source(questions, subject, split, str(path), raw, file=rel)
            splits[split] = tuple(_normalized(q, normalize) for q in questions)
        out.append(
            SubjectData(subject, splits[subject.split], splits[subject.fewshot_split], sources)
        )
    return out


def load_benchmark(data_dir: str | Path | None, subjects: list[str] | None, normalize: str = "none",
                   registry: Registry | None = None) -> tuple[list[SubjectData], dict]:
    """The selected subjects and groups (None: the devops group) from `data_dir`, else from the Hub
    (a tasks file's own subjects: from their files), and where and how they were selected and read.

    A subject chosen through a group whose files are all absent from `data_dir` is left out with a
    warning (a copy of CMMLU or C-Eval may lack some subjects) and recorded as missing; one named
    on its own must be there."""
    registry = registry or builtin_registry()
    if not subjects and registry.tasks_file:  # a tasks file alone: its own subjects
        subjects = [registry.tasks_file["group"]]
    selected = select_subjects(subjects, registry)
    named = {n.strip() for n in subjects or []}
    missing: list[str] = []
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise TaskError(f"data directory not found: {root}")
        missing = [s.key for s in selected if s.key not in named and s.builtin
                   and not any((root / s.local_file(split)).exists() for split in (s.split, s.fewshot_split))]
        if len(missing) == len(selected):
            raise TaskError(f"{root} has none of the selected subjects' files (e.g. {selected[0].local_file(selected[0].split)})")
        if missing:
            log.warning("%s has no files of %d selected subject(s), left out: %s", root, len(missing), ", ".join(missing))
        selected = tuple(s for s in selected if s.key not in missing)
        data = load_local(data_dir, selected, normalize)
        info = {"source": "local", "dir": str(root.resolve()), "normalize": normalize}
    else:
        own = [s for s in selected if s.benchmark.root is not None]
        theirs = [s for s in selected if s.benchmark.root is None]
        loaded = {d.subject.key: d for d in [*load_hub(theirs, normalize), *(load_local(None, own, normalize) if own else [])]}
        data = [loaded[s.key] for s in selected]
        info = {"source": "hub" if theirs else "local", "normalize": normalize}
    info["selection"] = selection(registry, [s.key for s in selected], subjects, missing)
    return data, info


def selection(registry: Registry, keys: list[str], names: list[str] | None, missing: list[str] = ()) -> dict:
    """How a run's subjects were chosen, for its record: the names given (the devops group when
    none), the tasks file, the subjects left out, and the categories and groups to report as
    (name, title, kind, subjects in the run, subjects in the registry)."""
    named = registry.named_groups(names)
    group = ",".join(n.strip() for n in names) if names else (registry.tasks_file or {}).get("group", GROUP)
    if names and set(keys) <= set(registry.groups[GROUP].subjects) and not named:
        group = GROUP  # subjects of the devops group, named one by one: recorded as before
    return {
        "group": group,
        "tasks_file": registry.tasks_file,
        "missing": tuple(missing),
        "parts": tuple((g.name, g.title, g.kind, inside, len(g.subjects)) for g, inside in registry.breakdown(keys, named)),
    }


# --- Hugging Face Hub -------------------------------------------------------------------------


def read_archive_member(archive: str | Path, subject: Subject, split: str) -> tuple[bytes, str]:
    """Bytes of a split file inside a benchmark's zip archive, and the member's name."""
    wanted = subject.benchmark.hub["member"].format(split=split, key=subject.file_name, name=subject.file_name)
    try:
        with zipfile.ZipFile(archive) as zf:
            # Archives differ in their top folder; match on the benchmark's own relative path.
            names = [n for n in zf.namelist() if n == wanted or n.endswith("/" + wanted)]
            if not names:
                raise TaskError(f"{archive}: no member {wanted}")
            return zf.read(names[0]), names[0]
    except zipfile.BadZipFile as e:
        raise TaskError(f"{archive}: not a zip archive ({e})") from None


def rows_to_questions(rows, subject: Subject, name: str, split: str | None = None) -> tuple[Question, ...]:
    """Questions from records with the benchmark's column names (a parquet split, say)."""
    bench = subject.benchmark
    out = []
    for index, row in enumerate(rows):
        where = f"{name} record {index}"
        try:
            answer = str(row[bench.answer_column])
            question = str(row[bench.question_column])
            options = tuple(str(row[letter]) for letter in LETTERS)
        except KeyError as e:
            raise TaskError(f"{where}: missing column {e.args[0]!r}") from None
        if answer not in LETTERS:
            raise TaskError(f"{where}: answer {answer!r} is not one of A, B, C, D")
        out.append(Question(subject.key, index, question, options, answer))
        _check_options(out[-1], where, subject, split)
    return tuple(out)


def load_hub(subjects, normalize: str = "none", repos: dict[str, str] | None = None) -> list[SubjectData]:
    """Read the subjects from the Hugging Face Hub at the pinned revisions of `subjects.yaml`.

    `repos` maps a benchmark key to another repo id or a local folder laid out like the Hub repo.
    """
    normalize_text("", normalize)
    repos = repos or {}
    out = []
    for subject in subjects:
        hub = subject.benchmark.hub
        if not hub:
            raise TaskError(f"{subject.key}: {subject.benchmark.title} has no Hub copy; pass --data-dir")
        repo = repos.get(subject.benchmark.key, hub["repo"])
        splits, sources = {}, {}
        for split in (subject.split, subject.fewshot_split):
            where = {"hub": repo, "revision": hub["revision"]}
            if hub["kind"] == "archive":
                archive = _fetch_hub_file(repo, hub["file"], hub["revision"])
                raw, member = read_archive_member(archive, subject, split)
                name = f"{repo}@{hub['revision'][:7]}:{hub['file']}/{member}"
                questions = parse_csv(raw, name, subject, split)
                where["file"] = f"{hub['file']}/{member}"
            else:
                name = f"{repo}@{hub['revision'][:7]}:{subject.key}/{split}"
                rows = _load_parquet_split(repo, hub["config"].format(key=subject.file_name, name=subject.file_name), split, hub["revision"])
                questions = rows_to_questions(rows, subject, name, split)
                raw = None
            _check_count(questions, subject, split, name)
            sources[split] = _source(questions, subject, split, name, raw, **where)
            splits[split] = tuple(_normalized(q, normalize) for q in questions)
        out.append(
            SubjectData(subject, splits[subject.split], splits[subject.fewshot_split], sources)
        )
    return out


def _fetch_hub_file(repo: str, filename: str, revision: str) -> Path:
    local = Path(repo) / filename
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision))
    except Exception as e:  # network, auth, offline mode: all end the same way for the user
        raise TaskError(
            f"could not download {filename} from the Hub dataset {repo}: {first_line(e)} "
            "(offline? use a local copy: --data-dir)"
        ) from None


def _load_parquet_split(repo: str, config: str, split: str, revision: str):
    import datasets

    kwargs = {} if Path(repo).is_dir() else {"revision": revision}
    try:
        return datasets.load_dataset(repo, name=config, split=split, **kwargs)
    except Exception as e:
        raise TaskError(
            f"could not load {repo} ({config}, {split}) from the Hub: {first_line(e)} "
            "(offline? use a local copy: --data-dir)"
        ) from None
