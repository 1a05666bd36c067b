"""`harness tasks`: the subjects, their groups and the protocols; lm-eval task YAMLs of them."""

from __future__ import annotations

from pathlib import Path

from harness.commands.args import DATA_DIR_ENV, add_data_dir_argument, add_selection_arguments, given, registry, subject_keys
from harness.errors import HarnessError


def register(sub) -> None:
    p = sub.add_parser("tasks", help="the subjects, groups and protocols")
    tsub = p.add_subparsers(dest="tasks_command", required=True, parser_class=type(p))
    t = tsub.add_parser("list", help="list subjects (or groups) and protocols")
    t.add_argument("--groups", action="store_true", help="list the groups (and categories) instead of the subjects")
    add_selection_arguments(t)
    t.set_defaults(func=list_tasks)
    t = tsub.add_parser("export-lm-eval", help="write lm-evaluation-harness task YAMLs for the subjects and their group")
    t.add_argument("dir", type=given, help="folder for the YAMLs (then: lm_eval --include_path DIR --tasks devops)")
    add_data_dir_argument(t, help=f"local data the tasks read (default ${DATA_DIR_ENV})")  # no Hub: the YAMLs point at files
    add_selection_arguments(t)
    t.set_defaults(func=export_lm_eval)


def list_tasks(args) -> int:
    from tasks import protocols

    reg = registry(args)
    if args.groups:
        print(f"{'group':<28}{'kind':<10}{'subjects':>9}{'questions':>11}  title")
        for g in reg.groups.values():
            n = sum(reg.subject(k).count or 0 for k in g.subjects)
            print(f"{g.name:<28}{g.kind:<10}{len(g.subjects):>9}{n:>11}  {g.title}")
        return 0
    selected = reg.select(subject_keys(args) or ([reg.tasks_file["group"]] if reg.tasks_file else list(reg.groups)))
    print(f"{'subject':<40}{'benchmark':<12}{'split':<6}{'n':>6}  {'category':<28}name")
    for s in selected:
        count = "?" if s.count is None else str(s.count)
        note = "" if s.staged else "  (not staged: digests unpinned)"
        category = ", ".join(s.categories) + (" · hard" if s.hard else "")
        print(f"{s.key:<40}{s.benchmark.title:<12}{s.split:<6}{count:>6}  {category:<28}{s.name_zh}{note}")
    print(f"{len(selected)} subjects, {sum(s.count or 0 for s in selected)} questions; "
          "groups: harness tasks list --groups")
    print()
    for name, p in protocols().items():
        print(f"protocol {name} (v{p.version}): {p.title}")
    return 0


def export_lm_eval(args) -> int:
    from harness.files import write_all_or_none
    from tasks import get_protocol, load_benchmark
    from tasks.lm_eval_export import task_files

    if not args.data_dir:
        raise HarnessError(f"export-lm-eval needs local data: pass --data-dir or set {DATA_DIR_ENV}")
    reg = registry(args)
    names = subject_keys(args) or ([reg.tasks_file["group"]] if reg.tasks_file else None)
    data_dir = Path(args.data_dir).expanduser()
    data, _ = load_benchmark(data_dir, names, "none", reg)
    out = Path(args.dir).expanduser()
    if out.exists() and not out.is_dir():
        raise HarnessError(f"{out} is not a directory")
    group = "+".join(names) if names else None
    files = {out / name: text for name, text in task_files(data, get_protocol("lm-eval"), data_dir, group).items()}
    write_all_or_none(files)
    for path in files:
        print(path)
    return 0
