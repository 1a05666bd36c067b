"""The subjects, their benchmarks and their groups: the package's `subjects.yaml`, plus any
subjects a user declares in a tasks file of the same schema (`load_registry`).

Every CMMLU and C-Eval subject is here, each with its benchmark's own category. Groups are names
for sets of subjects: `devops` (the model card's 574 questions, the default), each benchmark
(`cmmlu`, `ceval`), each benchmark category (`cmmlu-stem`, `ceval-social-science`, ... and C-Eval's
`ceval-hard`), and `general` (every built-in subject outside `devops`). A tasks file adds its own
subjects and a group of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml

from tasks.errors import TaskError

LETTERS = ("A", "B", "C", "D")
GROUP = "devops"  # the default group: the model card's six subjects
GENERAL = "general"  # every built-in subject outside GROUP
LAYOUTS = ("csv", "jsonl")


@dataclass(frozen=True)
class Benchmark:
    """A source benchmark: its file layout, CSV header (or JSONL fields) and Hub location."""

    key: str
    title: str
    local_path: str  # relative to the data directory, or to `root`; formatted with {split}, {name}/{key}
    header: tuple[str, ...]
    optional_columns: tuple[str, ...]
    question_column: str
    answer_column: str
    hub: dict | None
    layout: str = "csv"  # csv | jsonl
    style: str = ""  # which benchmark's prompt header its subjects get ("cmmlu" / "ceval"); default: key
    root: Path | None = None  # a tasks file's benchmark: its files are found from here, not the data directory
    options_field: str | None = None  # jsonl: one field holding the four options as a list, instead of A..D
    categories: tuple[str, ...] = ()  # the benchmark's own categories, in its own order

    @property
    def prompt_style(self) -> str:
        return self.style or self.key


@dataclass(frozen=True)
class Subject:
    """One evaluated subject: which split is scored, which split gives few-shot examples."""

    key: str  # unique among all subjects (records, --subjects)
    benchmark: Benchmark
    name_zh: str
    name_en: str
    split: str
    fewshot_split: str
    count: int | None  # None: a user's subject that declares no count
    sha256: dict[str, str]  # split -> sha256 of the published file's bytes
    content_sha256: dict[str, str]  # split -> digest of its parsed cells (`tasks.data.content_digest`)
    # (split, record, letter) of option cells the published files leave empty; any other is an error.
    empty_options: frozenset[tuple[str, int, str]] = frozenset()
    name: str = ""  # the benchmark's own subject name (file names, Hub config); default: key
    # The benchmark's own categories ("STEM", "Social Science", ...): CMMLU counts its China-specific
    # subjects under two.
    categories: tuple[str, ...] = ()
    hard: bool = False  # C-Eval's hard set
    builtin: bool = True  # from the package's subjects.yaml, not a user's tasks file
    staged: bool = True  # False: a published subject whose files' digests are not pinned here

    @property
    def category(self) -> str | None:
        return self.categories[0] if self.categories else None

    @property
    def file_name(self) -> str:
        return self.name or self.key

    def local_file(self, split: str) -> str:
        """The file's path relative to a data directory in the benchmark's own layout (for a tasks
        file's benchmark: the absolute path)."""
        rel = self.benchmark.local_path.format(split=split, key=self.file_name, name=self.file_name)
        return str(self.benchmark.root / rel) if self.benchmark.root is not None else rel


@dataclass(frozen=True)
class Group:
    """A named set of subjects (registry order)."""

    name: str
    title: str
    subjects: tuple[str, ...]
    kind: str  # "group" (devops, general, a benchmark, a tasks file's) or "category"


@dataclass(frozen=True)
class Registry:
    """Benchmarks, subjects (canonical order) and groups; `tasks_file` names a user's file merged in."""

    benchmarks: dict[str, Benchmark]
    subjects: tuple[Subject, ...]
    groups: dict[str, Group]
    tasks_file: dict | None = None  # {"path": absolute, "sha256": of its bytes}
    _by_key: dict = field(default_factory=dict, compare=False, repr=False)

    def subject(self, key: str) -> Subject | None:
        if not self._by_key:
            self._by_key.update((s.key, s) for s in self.subjects)
        return self._by_key.get(key)

    def select(self, names: list[str] | None) -> tuple[Subject, ...]:
        """Subjects by key or group name (None: the devops group), in canonical order, each once."""
        if not names:
            names = [GROUP]
        wanted: set[str] = set()
        for raw in names:
            name = raw.strip()
            if name in self.groups:
                wanted.update(self.groups[name].subjects)
            elif self.subject(name) is not None:
                wanted.add(name)
            else:
                raise TaskError(f"unknown subject or group {name!r}{self._hint(name)} (`harness tasks list` shows them all)")
        return tuple(s for s in self.subjects if s.key in wanted)

    def named_groups(self, names: list[str] | None) -> tuple[str, ...]:
        """Which of the selection's names are groups (None: the devops group)."""
        return tuple(n.strip() for n in (names or [GROUP]) if n.strip() in self.groups)

    def breakdown(self, keys, named: tuple[str, ...] = ()) -> list[tuple[Group, tuple[str, ...]]]:
        """The categories and groups a run of subjects `keys` reports, each with its subjects in the
        run: every category it touches, every group it holds whole, and the groups it was selected
        by. None for a run inside the devops group: its tables are the model card's."""
        keys = set(keys)
        if keys <= set(self.groups[GROUP].subjects):
            return []
        out = []
        for g in self.groups.values():
            inside = tuple(k for k in g.subjects if k in keys)
            if inside and (g.kind == "category" or len(inside) == len(g.subjects) or g.name in named):
                out.append((g, inside))
        return out

    def _hint(self, name: str) -> str:
        close = [k for k in [*self.groups, *(s.key for s in self.subjects)] if name and (k.endswith("-" + name) or name in k)]
        if close:
            return ": did you mean " + " or ".join(close[:3]) + "?"
        return f"; groups: {', '.join(self.groups)}" if len(self.groups) < 30 else ""

    def categories_of(self, keys) -> dict[str, tuple[str, ...]]:
        """The category groups the given subjects fall in, each with the subjects of `keys` in it."""
        keys = set(keys)
        out = {}
        for g in self.groups.values():
            if g.kind == "category":
                inside = tuple(k for k in g.subjects if k in keys)
                if inside:
                    out[g.name] = inside
        return out


def slug(text: str) -> str:
    """A category as part of a group name: "Social Science" -> "social-science"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- the package's registry ---------------------------------------------------------------------


@cache
def _spec() -> dict:
    return yaml.safe_load(files("tasks").joinpath("subjects.yaml").read_text(encoding="utf-8"))


@cache
def builtin_registry() -> Registry:
    spec = _spec()
    benchmarks = {key: _benchmark(key, b, None, "tasks/subjects.yaml") for key, b in spec["benchmarks"].items()}
    subjects = tuple(_subject(s, benchmarks, "tasks/subjects.yaml", builtin=True) for s in spec["subjects"])
    devops = tuple(spec["groups"][GROUP])
    groups = {GROUP: Group(GROUP, "DevOps (the model card's subset)", devops, "group")}
    for b in benchmarks.values():
        groups[b.key] = Group(b.key, b.title, tuple(s.key for s in subjects if s.benchmark is b), "group")
    for b in benchmarks.values():
        mine = [s for s in subjects if s.benchmark is b]
        unknown = {c for s in mine for c in s.categories} - set(b.categories)
        if unknown:
            raise TaskError(f"tasks/subjects.yaml: {b.key} has no category {sorted(unknown)[0]!r}")
        for category in b.categories:
            name = f"{b.key}-{slug(category)}"
            groups[name] = Group(name, f"{b.title} {category}", tuple(s.key for s in mine if category in s.categories), "category")
        if any(s.hard for s in mine):
            groups[f"{b.key}-hard"] = Group(f"{b.key}-hard", f"{b.title} Hard", tuple(s.key for s in mine if s.hard), "group")
    groups[GENERAL] = Group(GENERAL, "General (CMMLU and C-Eval outside DevOps)",
                            tuple(s.key for s in subjects if s.key not in devops), "group")
    return Registry(benchmarks, subjects, groups)


def all_subjects() -> tuple[Subject, ...]:
    """Every built-in subject in canonical order (CMMLU first, then C-Eval, each by name)."""
    return builtin_registry().subjects


def devops_subjects() -> tuple[Subject, ...]:
    """The six subjects of the model card's 574 questions, in canonical order."""
    return builtin_registry().select([GROUP])


def select_subjects(names: list[str] | None, registry: Registry | None = None) -> tuple[Subject, ...]:
    """Subjects by key or group name (None: the devops group), in canonical order."""
    return (registry or builtin_registry()).select(names)


def subject_title(key: str) -> str:
    """A subject's English name; the key itself for a subject the registry does not know."""
    s = builtin_registry().subject(key)
    return s.name_en if s else key


# --- reading a spec: the package's and a user's ---------------------------------------------------


def _benchmark(key: str, b, root: Path | None, where: str, builtin: dict[str, Benchmark] | None = None) -> Benchmark:
    if not isinstance(b, dict):
        raise TaskError(f"{where}: benchmark {key!r} must be a mapping")
    base = None
    if "layout" in b and b["layout"] not in LAYOUTS:
        if not builtin or b["layout"] not in builtin:
            choices = ", ".join([*LAYOUTS, *(builtin or {})])
            raise TaskError(f"{where}: benchmark {key!r}: layout {b['layout']!r} is not one of {choices}")
        base = builtin[b["layout"]]
    try:
        if base is not None:  # "layout: ceval": that benchmark's files, header and prompts, found from here
            return replace(base, key=key, title=str(b.get("title", key)), local_path=str(b["local_path"]), hub=None,
                           style=str(b.get("prompts", base.prompt_style)), root=root)
        layout = b.get("layout", "csv")
        columns = b.get("columns") or {}
        if layout == "jsonl":
            return Benchmark(
                key=key, title=str(b.get("title", key)), local_path=str(b["local_path"]), header=(), optional_columns=(),
                question_column=str(columns.get("question", "question")), answer_column=str(columns.get("answer", "answer")),
                hub=None, layout="jsonl", style=str(b.get("prompts", "ceval")), root=root,
                options_field=columns.get("options"),
            )
        return Benchmark(
            key=key,
            title=str(b["title"]),
            local_path=str(b["local_path"]),
            header=tuple(str(c) for c in b["header"]),
            optional_columns=tuple(b.get("optional_columns", ())),
            question_column=str(columns["question"]),
            answer_column=str(columns["answer"]),
            hub=b.get("hub"),
            style=str(b.get("prompts", "")),
            root=root,
            categories=tuple(b.get("categories", ())),
        )
    except (KeyError, TypeError) as e:
        raise TaskError(f"{where}: benchmark {key!r} needs {_missing(e)}") from None


def _subject(s, benchmarks: dict[str, Benchmark], where: str, builtin: bool) -> Subject:
    if not isinstance(s, dict):
        raise TaskError(f"{where}: every entry of subjects: must be a mapping, not {s!r}")
    key = s.get("key")
    try:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", key):
            raise TaskError(f"{where}: subject key {key!r} must be a name of letters, digits, _ . -")
        if s.get("benchmark") not in benchmarks:
            raise TaskError(f"{where}: subject {key}: benchmark {s.get('benchmark')!r} is not one of {', '.join(benchmarks)}")
        count = s.get("count")
        if count is not None and (type(count) is not int or count < 1):
            raise TaskError(f"{where}: subject {key}: count must be a whole number of questions, not {count!r}")
        if count is None and builtin and s.get("staged", True):
            raise TaskError(f"{where}: subject {key} needs its count")
        return Subject(
            key=key,
            benchmark=benchmarks[s["benchmark"]],
            name_zh=str(s["name_zh"]),
            name_en=str(s.get("name_en") or key),
            split=str(s["split"]),
            fewshot_split=str(s["fewshot_split"]),
            count=count,
            sha256=dict(s.get("sha256") or {}),
            content_sha256=dict(s.get("content_sha256") or {}),
            empty_options=_empty_options(s.get("empty_options") or {}),
            name=str(s.get("name") or ""),
            categories=_categories(s.get("category"), key, where),
            hard=bool(s.get("hard")),
            builtin=builtin,
            staged=bool(s.get("staged", True)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TaskError(f"{where}: subject {key!r} needs {_missing(e)}") from None


def _categories(value, key, where) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise TaskError(f"{where}: subject {key}: category must be a name or a list of names, not {value!r}")
    return tuple(values)


def _missing(e: Exception) -> str:
    return repr(e.args[0]) if isinstance(e, KeyError) else f"well-formed fields ({e})"


def _empty_options(declared: dict) -> frozenset[tuple[str, int, str]]:
    """`{split: {record: "CD"}}` as (split, record, letter) triples."""
    return frozenset((split, int(record), letter) for split, rows in declared.items() for record, letters in rows.items() for letter in letters)


# --- a user's tasks file -------------------------------------------------------------------------


def load_registry(tasks_file: str | Path | None = None) -> Registry:
    """The package's registry, plus the subjects of `tasks_file` (same schema as `subjects.yaml`)
    and a group of them; a clash, an unknown benchmark or a malformed entry is a TaskError."""
    base = builtin_registry()
    if tasks_file is None:
        return base
    path = Path(tasks_file).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TaskError(f"tasks file not found: {path}") from None
    except OSError as e:
        raise TaskError(f"cannot read tasks file {path}: {e.strerror or e}") from None
    where = str(path)
    try:
        spec = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaskError(f"{where}: not a YAML file ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("subjects"), list) or not spec["subjects"]:
        raise TaskError(f"{where}: a tasks file needs a list of subjects: (see tasks/subjects.yaml for the schema)")
    root = path.resolve().parent
    declared = spec.get("benchmarks") or {}
    if not isinstance(declared, dict):
        raise TaskError(f"{where}: benchmarks: must map names to benchmark layouts")
    benchmarks = dict(base.benchmarks)
    for key, b in declared.items():
        if key in base.benchmarks:
            raise TaskError(f"{where}: benchmark {key!r} is a built-in one; give yours another name (or use layout: {key})")
        benchmarks[key] = _benchmark(str(key), b, root, where, base.benchmarks)
    subjects = []
    for entry in spec["subjects"]:
        s = _subject(entry, benchmarks, where, builtin=False)
        if base.subject(s.key) is not None or s.key in base.groups:
            raise TaskError(f"{where}: subject {s.key!r} clashes with a built-in subject or group; give it another key")
        if any(t.key == s.key for t in subjects):
            raise TaskError(f"{where}: subject {s.key!r} is declared twice")
        if s.benchmark.key in base.benchmarks and s.benchmark.root is None and s.count is None:
            raise TaskError(f"{where}: subject {s.key} uses the built-in {s.benchmark.key} layout and needs its count")
        subjects.append(s)
    name = str(spec.get("group") or path.stem)
    if name in base.groups or any(s.key == name for s in subjects) or base.subject(name) is not None:
        raise TaskError(f"{where}: group {name!r} clashes with a built-in subject or group; name yours with group:")
    groups = dict(base.groups)
    groups[name] = Group(name, str(spec.get("title") or name), tuple(s.key for s in subjects), "group")
    for category in dict.fromkeys(c for s in subjects for c in s.categories):
        cat = f"{name}-{slug(category)}"
        if cat in groups:
            raise TaskError(f"{where}: category group {cat!r} clashes with a built-in group")
        groups[cat] = Group(cat, f"{name} {category}", tuple(s.key for s in subjects if category in s.categories), "category")
    info = {"path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(), "group": name}
    return Registry(benchmarks, base.subjects + tuple(subjects), groups, info)
