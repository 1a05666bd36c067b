"""`harness tasks`: the subjects and protocols."""

from __future__ import annotations

from pathlib import Path

from harness.commands.args import DATA_DIR_ENV, add_data_dir_argument, given
from harness.errors import HarnessError


def register(sub) -> None:
    p = sub.add_parser("tasks", help="the subjects and protocols")
    tsub = p.add_subparsers(dest="tasks_command", required=True, parser_class=type(p))
    t = tsub.add_parser("list", help="list subjects and protocols")
    t.set_defaults(func=list_tasks)
    t = tsub.add_parser("export-lm-eval", help="write lm-evaluation-harness task YAMLs for the six subjects and the devops group")
    t.add_argument("dir", type=given, help="folder for the YAMLs (then: lm_eval --include_path DIR --tasks devops)")
    add_data_dir_argument(t, help=f"local data the tasks read (default ${DATA_DIR_ENV})")  # no Hub: the YAMLs point at files
    t.set_defaults(func=export_lm_eval)


def list_tasks(args) -> int:
    from tasks import all_subjects, protocols

    print(f"{'subject':<24}{'benchmark':<10}{'split':<6}{'n':>5}  name")
    for s in all_subjects():
        print(f"{s.key:<24}{s.benchmark.title:<10}{s.split:<6}{s.count:>5}  {s.name_zh}")
    print(f"{'devops (group)':<40}{sum(s.count for s in all_subjects()):>5}")
    print()
    for name, p in protocols().items():
        print(f"protocol {name} (v{p.version}): {p.title}")
    return 0




def export_lm_eval(args) -> int:
    from harness.files import write_all_or_none
    from tasks import all_subjects, get_protocol, load_local
    from tasks.lm_eval_export import task_files

    if not args.data_dir:
        raise HarnessError(f"export-lm-eval needs local data: pass --data-dir or set {DATA_DIR_ENV}")
    data_dir = Path(args.data_dir).expanduser()
    data = load_local(data_dir, all_subjects())
    out = Path(args.dir).expanduser()
    if out.exists() and not out.is_dir():
        raise HarnessError(f"{out} is not a directory")
    files = {out / name: text for name, text in task_files(data, get_protocol("lm-eval"), data_dir).items()}
    write_all_or_none(files)
    for path in files:
        print(path)
    return 0
