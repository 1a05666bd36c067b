"""`harness tasks`: the subjects and protocols."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("tasks", help="the subjects and protocols")
    tsub = p.add_subparsers(dest="tasks_command", required=True, parser_class=type(p))
    t = tsub.add_parser("list", help="list subjects and protocols")
    t.set_defaults(func=list_tasks)


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


