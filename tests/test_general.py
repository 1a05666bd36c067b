"""General ability beside the DevOps subset: every CMMLU and C-Eval subject as data, groups by
name, a user's own question sets (`--tasks-file`), category and group scores, and one gate over
the DevOps and the general part."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli import main
from harness.files import write_json
from harness.records import LETTERS, Sample, SampleLog, load_run, seal_run, summarize
from tasks import GENERAL, TaskError, builtin_registry, devops_subjects, load_benchmark, load_local, load_registry

UNSTAGED = ["college_mathematics", "elementary_information_and_technology", "discrete_mathematics", "operating_system"]


def _eval(model, out, data_dir, *extra) -> int:
    return main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 *map(str, extra)])


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the registry ----------------------------------------------------------------------------------


def test_groups_by_name_hold_the_benchmarks_own_subjects_and_categories():
    reg = builtin_registry()
    sizes = {name: len(g.subjects) for name, g in reg.groups.items()}
    assert sizes == {
        "devops": 6, "cmmlu": 67, "ceval": 52,
        # CMMLU's src/categories.py: a China-specific subject also counts under its other category
        "cmmlu-stem": 17, "cmmlu-humanities": 13, "cmmlu-social-science": 22, "cmmlu-other": 15, "cmmlu-china-specific": 15,
        # C-Eval's subject_mapping.json, and its hard set
        "ceval-stem": 20, "ceval-social-science": 10, "ceval-humanities": 11, "ceval-other": 11, "ceval-hard": 8,
        "general": 113,
    }
    assert reg.groups["devops"].subjects == tuple(s.key for s in devops_subjects())
    assert sum(s.count for s in devops_subjects()) == 574
    assert set(reg.groups[GENERAL].subjects) == {s.key for s in reg.subjects} - set(reg.groups["devops"].subjects)
    assert set(reg.groups["ceval-hard"].subjects) == {
        "advanced_mathematics", "discrete_mathematics", "probability_and_statistics", "college_chemistry", "college_physics",
        "ceval-high_school_mathematics", "ceval-high_school_chemistry", "ceval-high_school_physics"}
    network = reg.subject("computer_network")
    assert (network.name_zh, network.categories) == ("计算机网络", ("STEM",))
    assert reg.subject("ancient_chinese").categories == ("Social Science", "China specific")
    # a name both benchmarks use is prefixed in both, and still reads its benchmark's own file
    both = [k for k in (s.key for s in reg.subjects) if k.startswith(("cmmlu-", "ceval-"))]
    assert sorted(both) == sorted(f"{b}-{n}" for b in ("cmmlu", "ceval") for n in (
        "high_school_biology", "high_school_chemistry", "high_school_geography", "high_school_mathematics",
        "high_school_physics", "high_school_politics", "sports_science"))
    assert reg.subject("ceval-sports_science").local_file("val") == "ceval/val/sports_science_val.csv"
    assert reg.subject("cmmlu-sports_science").local_file("test") == "cmmlu/test/sports_science.csv"
    assert [s.key for s in reg.subjects if not s.staged] == UNSTAGED
    with pytest.raises(TaskError, match="did you mean cmmlu-high_school_biology or ceval-high_school_biology"):
        reg.select(["high_school_biology"])


def test_every_staged_subject_reads_with_its_pinned_count_and_digests(data_dir, caplog):
    reg = builtin_registry()
    staged = [s for s in reg.subjects if s.staged]
    with caplog.at_level(logging.WARNING, logger="harness"):
        data = load_local(data_dir, staged)
    assert not caplog.records  # every file is the published one, byte for byte
    assert len(data) == 115 and sum(len(d.questions) for d in data) == 12550
    for d in data:
        for split, src in d.sources.items():
            assert src["sha256"] == d.subject.sha256[split] and src["content_sha256"] == d.subject.content_sha256[split]


def test_a_group_leaves_out_subjects_the_data_directory_lacks_but_a_named_subject_must_be_there(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="harness"):
        data, info = load_benchmark(data_dir, ["ceval-hard"])
    assert [d.subject.key for d in data] == [k for k in builtin_registry().groups["ceval-hard"].subjects if k != "discrete_mathematics"]
    assert info["selection"]["missing"] == ("discrete_mathematics",)
    assert "left out: discrete_mathematics" in caplog.text
    with pytest.raises(TaskError, match="missing data file: .*discrete_mathematics_val.csv"):
        load_benchmark(data_dir, ["discrete_mathematics"])


def test_the_hub_copies_hold_every_subject_under_its_benchmark_name(tmp_path, data_dir):
    """The pinned Hub layouts (CMMLU's archive, C-Eval's parquet configs) are found by the
    benchmark's own subject name, also for a prefixed key."""
    import zipfile

    import pandas as pd

    from tasks import load_hub, select_subjects

    cmmlu = tmp_path / "cmmlu"
    cmmlu.mkdir()
    with zipfile.ZipFile(cmmlu / "cmmlu_v1_0_1.zip", "w") as zf:
        for split in ("test", "dev"):
            zf.write(data_dir / f"cmmlu/{split}/sports_science.csv", f"{split}/sports_science.csv")
    ceval = tmp_path / "ceval"
    local = {d.subject.key: d for d in load_local(data_dir, select_subjects(["ceval-sports_science"]))}["ceval-sports_science"]
    (ceval / "sports_science").mkdir(parents=True)
    for split, qs in (("val", local.questions), ("dev", local.shots)):
        pd.DataFrame([{"id": q.id, "question": q.question, **dict(zip(LETTERS, q.options)), "answer": q.answer}
                      for q in qs]).to_parquet(ceval / "sports_science" / f"{split}-00000-of-00001.parquet")
    (ceval / "README.md").write_text("---\nconfigs:\n  - config_name: sports_science\n    data_files:\n"
                                     "      - split: val\n        path: sports_science/val-*\n"
                                     "      - split: dev\n        path: sports_science/dev-*\n---\n", encoding="utf-8")
    subjects = select_subjects(["cmmlu-sports_science", "ceval-sports_science"])
    loaded = load_hub(subjects, repos={"cmmlu": str(cmmlu), "ceval": str(ceval)})
    assert [d.subject.key for d in loaded] == ["cmmlu-sports_science", "ceval-sports_science"]
    for d, s in zip(loaded, subjects):
        assert len(d.questions) == s.count
        assert d.sources[s.split]["content_sha256"] == s.content_sha256[s.split]
        assert {q.subject for q in d.questions} == {s.key}


# --- general runs: per-category and per-group numbers ----------------------------------------------


@pytest.fixture(scope="module")
def general_run(tiny_model, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("general") / "run"
    assert _eval(tiny_model, out, data_dir, "--group", "general", "--shots", "0", "--limit", "3") == 0
    return out


def test_a_general_run_scores_every_staged_non_devops_subject(general_run):
    r = _results(general_run)
    reg = builtin_registry()
    expected = [k for k in reg.groups[GENERAL].subjects if k not in UNSTAGED]
    assert r["task"]["subjects"] == expected and len(expected) == 109
    assert r["task"]["group"] == "general" and r["task"]["missing"] == UNSTAGED
    assert r["overall"]["n"] == 3 * 109


def test_category_and_group_averages_match_a_hand_computation(general_run):
    r = _results(general_run)
    samples = [json.loads(line) for line in (general_run / "samples.jsonl").read_text().splitlines()]
    reg = builtin_registry()
    present = set(r["task"]["subjects"])
    for block, kind in (("categories", "category"), ("groups", "group")):
        for name, part in r[block].items():
            group = reg.groups[name]
            assert group.kind == kind
            inside = [k for k in group.subjects if k in present]
            assert part["subjects"] == inside and part["of"] == len(group.subjects)
            mine = [s for s in samples if s["subject"] in inside]
            assert (part["n"], part["correct"]) == (len(mine), sum(s["correct"] for s in mine))
            assert part["micro"] == pytest.approx(sum(s["correct"] for s in mine) / len(mine), abs=1e-12)
            per_subject = [r["subjects"][k]["correct"] / r["subjects"][k]["n"] for k in inside]
            assert part["macro"] == pytest.approx(sum(per_subject) / len(per_subject), abs=1e-12)
    # every category the run touches; the group it was selected by, though it lacks four subjects
    assert set(r["categories"]) == {n for n, g in reg.groups.items() if g.kind == "category" and set(g.subjects) & present}
    assert set(r["groups"]) == {"general"}


def test_an_edited_category_number_is_refused(general_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(general_run, run)
    r = _results(run)
    r["categories"]["ceval-stem"]["correct"] += 1
    write_json(run / "results.json", r)
    seal_run(run)  # even re-sealed: the numbers must be the samples'
    assert main(["report", str(run)]) == 2
    assert "categories.ceval-stem.correct is" in capsys.readouterr().err


def test_report_and_leaderboard_show_categories_and_groups_saying_micro_or_macro(general_run, tmp_path, capsys):
    assert main(["report", str(general_run)]) == 0
    report = capsys.readouterr().out
    assert "### By category" in report and "### By group" in report
    assert "| CMMLU STEM (`cmmlu-stem`) | 14 of 17 |" in report  # the three DevOps STEM subjects are not general
    assert "macro (CMMLU's and C-Eval's official average)" in report
    assert "--subjects general" in report  # the reproduce command
    assert main(["leaderboard", str(general_run)]) == 0
    board = capsys.readouterr().out
    assert "Per category and group, measured runs (accuracy %, **macro**" in board
    assert "| C-Eval Hard" not in board  # a group the run holds only part of, and was not selected by
    assert "General (CMMLU and C-Eval outside DevOps) (109 of 113)" in board
    assert "109 subjects (`--subjects general`)" in board


def test_the_devops_default_record_is_as_before(tiny_model, data_dir, tmp_path):
    assert _eval(tiny_model, tmp_path / "run", data_dir, "--shots", "0", "--limit", "2") == 0
    r = _results(tmp_path / "run")
    assert list(r) == ["schema", "harness", "model", "protocol", "task", "runtime", "subjects", "overall", "integrity"]
    assert list(r["task"]) == ["group", "subjects", "limit", "normalize", "data", "data_source"]
    assert r["task"]["group"] == "devops" and r["task"]["subjects"] == [s.key for s in devops_subjects()]
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert list(settings["task"]) == ["group", "subjects", "limit", "normalize", "data"]


def test_list_shows_groups_and_subjects(capsys):
    assert main(["tasks", "list", "--groups"]) == 0
    out = capsys.readouterr().out
    assert "cmmlu-china-specific" in out and "ceval-hard" in out and "general" in out
    assert main(["tasks", "list", "--group", "ceval-hard"]) == 0
    out = capsys.readouterr().out
    assert "discrete_mathematics" in out and "not staged" in out and "8 subjects" in out
    assert main(["tasks", "list", "--group", "nonsense"]) == 2
    assert "--group 'nonsense' is no group" in capsys.readouterr().err


# --- a user's own question sets --------------------------------------------------------------------

QUESTIONS = [
    ("Kubernetes 中用于暴露服务的对象是____。", ["Pod", "Service", "ConfigMap", "Secret"], "B"),
    ("Linux 中查看进程的命令是____。", ["ls", "cd", "ps", "rm"], "C"),
    ("Docker 镜像由什么构建____。", ["Dockerfile", "Makefile", "YAML", "JSON"], "A"),
    ("Git 中创建分支的命令是____。", ["git push", "git pull", "git log", "git branch"], "D"),
    ("HTTP 默认端口是____。", ["21", "80", "22", "25"], "B"),
    ("Nginx 常用作____。", ["数据库", "编译器", "反向代理", "操作系统"], "C"),
    ("Ansible 使用什么格式编写剧本____。", ["YAML", "XML", "CSV", "INI"], "A"),
    ("Prometheus 的主要用途是____。", ["存储代码", "监控告警", "编辑文档", "发送邮件"], "B"),
]


def _ceval_csv(rows, explanation: bool = False) -> str:
    header = "id,question,A,B,C,D,answer" + (",explanation" if explanation else "")
    lines = [header] + [",".join([str(i), q, *opts, a] + ([""] if explanation else [])) for i, (q, opts, a) in enumerate(rows)]
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture
def own_tasks(tmp_path) -> Path:
    """A tasks file with a C-Eval-layout CSV subject (files beside the tasks file) and a JSONL one."""
    root = tmp_path / "bank"
    (root / "csv").mkdir(parents=True)
    (root / "csv" / "k8s_val.csv").write_text(_ceval_csv(QUESTIONS), encoding="utf-8")
    (root / "csv" / "k8s_dev.csv").write_text(_ceval_csv(QUESTIONS[:5], explanation=True), encoding="utf-8")
    (root / "jsonl").mkdir()
    for split, rows in (("test", QUESTIONS[2:]), ("dev", QUESTIONS[:5])):
        with (root / "jsonl" / f"ops.{split}.jsonl").open("w", encoding="utf-8") as f:
            for q, opts, a in rows:
                f.write(json.dumps({"question": q, "options": opts, "answer": a}, ensure_ascii=False) + "\n")
    spec = {
        "group": "our-ops",
        "benchmarks": {
            "ourbank": {"title": "Our bank", "layout": "ceval", "local_path": "csv/{name}_{split}.csv"},
            "opsjsonl": {"title": "Ops JSONL", "layout": "jsonl", "local_path": "jsonl/{name}.{split}.jsonl",
                         "columns": {"options": "options"}, "prompts": "cmmlu"},
        },
        "subjects": [
            {"key": "k8s", "benchmark": "ourbank", "name_zh": "容器编排", "name_en": "Kubernetes", "category": "Platform",
             "split": "val", "fewshot_split": "dev", "count": 8},
            {"key": "ops", "benchmark": "opsjsonl", "name_zh": "运维", "name_en": "Operations", "category": "Platform",
             "split": "test", "fewshot_split": "dev"},
        ],
    }
    path = root / "tasks.yaml"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    return path


def test_a_tasks_file_declares_subjects_in_the_registry_schema(own_tasks):
    reg = load_registry(own_tasks)
    assert [s.key for s in reg.select(["our-ops"])] == ["k8s", "ops"]
    assert reg.groups["our-ops-platform"].subjects == ("k8s", "ops")
    data, info = load_benchmark(None, None, "none", reg)  # the tasks file's group by default, read from its own files
    assert [len(d.questions) for d in data] == [8, 6] and info["selection"]["group"] == "our-ops"
    assert data[1].questions[0].options == tuple(QUESTIONS[2][1])
    from tasks import get_protocol

    prompt = get_protocol("ceval").render(data[0].subject, data[0].shots, data[0].questions[0])
    assert prompt.startswith("以下是中国关于容器编排考试的单项选择题") and prompt.endswith("答案：")
    assert get_protocol("lm-eval").header_for(data[1].subject).startswith("以下是关于运维的单项选择题")


def test_a_tasks_file_runs_through_eval_report_compare_gate_and_the_lm_eval_export(own_tasks, tiny_model_factory, data_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for model, out in ((tiny_model_factory("qwen2", 0), a), (tiny_model_factory("qwen2", 1), b)):
        assert _eval(model, out, data_dir, "--tasks-file", own_tasks, "--shots", "5") == 0
    r = _results(a)
    assert r["task"]["subjects"] == ["k8s", "ops"] and r["task"]["group"] == "our-ops"
    assert r["task"]["tasks_file"]["path"] == str(own_tasks.resolve())
    assert set(r["categories"]) == {"our-ops-platform"} and set(r["groups"]) == {"our-ops"}
    capsys.readouterr()
    # a rerun resumes (verifies) it; a changed tasks file is another run
    assert _eval(tiny_model_factory("qwen2", 0), a, data_dir, "--tasks-file", own_tasks, "--shots", "5") == 0
    assert "finished already" in capsys.readouterr().err
    assert main(["report", str(a)]) == 0
    assert f"--tasks-file {own_tasks.resolve()}" in capsys.readouterr().out
    assert main(["compare", str(a), str(b)]) == 0
    assert "k8s" in capsys.readouterr().out
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--max-drop", "100", "--subject-max-drop", "100"]) == 0
    capsys.readouterr()
    out = tmp_path / "lm-eval"
    assert main(["tasks", "export-lm-eval", str(out), "--data-dir", str(data_dir), "--tasks-file", str(own_tasks)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["_our-ops.yaml", "devops_k8s.yaml", "devops_ops.yaml"]
    import yaml

    ops = yaml.safe_load((out / "devops_ops.yaml").read_text())
    assert ops["dataset_path"] == "json" and "{{options[0]}}" in ops["doc_to_text"]
    assert yaml.safe_load((out / "_our-ops.yaml").read_text())["task"] == ["devops_k8s", "devops_ops"]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["subjects"][0].update(key="computer_network"), "subject 'computer_network' clashes with a built-in subject"),
    (lambda s: s["subjects"][0].update(count=9), "8 questions, expected 9"),
    (lambda s: s["subjects"][0].update(benchmark="nope"), "benchmark 'nope' is not one of"),
    (lambda s: s["benchmarks"]["ourbank"].update(layout="cmmlu"), "unexpected header 'id,question,A,B,C,D,answer'"),
    (lambda s: s["benchmarks"]["ourbank"].update(layout="excel"), "layout 'excel' is not one of csv, jsonl, cmmlu, ceval"),
    (lambda s: s["subjects"][1].update(split="val"), "missing data file: .*ops.val.jsonl"),
    (lambda s: s.update(group="general"), "group 'general' clashes with a built-in subject or group"),
    (lambda s: s["subjects"].append(dict(s["subjects"][0])), "subject 'k8s' is declared twice"),
    (lambda s: s["benchmarks"].update(cmmlu={"layout": "cmmlu", "local_path": "x"}), "benchmark 'cmmlu' is a built-in one"),
])
def test_a_bad_tasks_file_is_one_clear_line(own_tasks, tiny_model, data_dir, tmp_path, capsys, edit, message):
    import re

    spec = json.loads(own_tasks.read_text(encoding="utf-8"))
    edit(spec)
    own_tasks.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    assert _eval(tiny_model, tmp_path / "run", data_dir, "--tasks-file", own_tasks, "--shots", "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_tasks_file_that_is_not_one_is_one_clear_line(tmp_path, tiny_model, data_dir, capsys):
    for text, message in (("- a\n- b\n", "a tasks file needs a list of subjects"), ("a: [", "not a YAML file")):
        path = tmp_path / "tasks.yaml"
        path.write_text(text)
        assert _eval(tiny_model, tmp_path / "run", data_dir, "--tasks-file", path) == 2
        assert message in capsys.readouterr().err
    assert _eval(tiny_model, tmp_path / "run", data_dir, "--tasks-file", tmp_path / "absent.yaml") == 2
    assert "tasks file not found" in capsys.readouterr().err


# --- one gate over both ----------------------------------------------------------------------------


def _rewrite(run_dir: Path, change) -> None:
    """Answer some questions otherwise (`change(sample) -> sample`), the record recomputed and sealed."""
    run = load_run(run_dir)
    samples = [change(s) for s in run.samples]
    record = replace(run.record, scores=summarize(samples, list(run.settings.subjects), run.settings.parts), integrity=None)
    (run_dir / "samples.jsonl").unlink()
    SampleLog(run_dir / "samples.jsonl").append(samples)
    write_json(run_dir / "results.json", record.to_json())
    seal_run(run_dir)


def _answer(s: Sample, right: bool) -> Sample:
    """The question answered right (gold gets the top logit) or wrong (the next letter does)."""
    letter = s.gold if right else LETTERS[(LETTERS.index(s.gold) + 1) % 4]
    logits = [0.0] * 4
    logits[LETTERS.index(letter)] = 5.0
    return Sample.scored(s.subject, s.id, s.gold, logits)


@pytest.fixture(scope="module")
def both_parts(tiny_model, data_dir, tmp_path_factory) -> dict[str, Path]:
    """One run of the devops group and C-Eval's hard set; a baseline (DevOps half right, general
    all right) and two candidates made from it: one better at DevOps, one that lost general ability."""
    root = tmp_path_factory.mktemp("both")
    assert _eval(tiny_model, root / "scored", data_dir, "--group", "devops,ceval-hard", "--shots", "0", "--limit", "12") == 0
    devops = set(builtin_registry().groups["devops"].subjects)
    runs = {}
    for name, change in {
        "baseline": lambda s: _answer(s, s.id % 2 == 0 if s.subject in devops else True),
        "better-devops": lambda s: _answer(s, True),
        "lost-general": lambda s: _answer(s, s.id % 2 == 0 if s.subject in devops else s.id % 4 == 0),
    }.items():
        shutil.copytree(root / "scored", root / name)
        _rewrite(root / name, change)
        runs[name] = root / name
    return runs


def _gate(runs, candidate, tmp_path, *extra) -> tuple[int, dict]:
    verdict = tmp_path / f"{candidate}.json"
    code = main(["gate", "--baseline", str(runs["baseline"]), "--candidate", str(runs[candidate]), "--max-drop", "1",
                 "--general-max-drop", "2", "--json", str(verdict), "--junit", str(tmp_path / f"{candidate}.xml"), *extra])
    return code, json.loads(verdict.read_text())


def test_one_gate_passes_better_devops_with_general_kept(both_parts, tmp_path, capsys):
    code, verdict = _gate(both_parts, "better-devops", tmp_path)
    assert code == 0 and verdict["passed"]
    parts = {v["part"]: v for v in verdict["verdicts"]}
    assert set(parts) == {"devops", "general"}
    assert parts["devops"]["overall"]["drop"] < -40 and parts["general"]["overall"]["drop"] == 0
    assert parts["general"]["thresholds"]["max_drop"] == 2 and parts["devops"]["thresholds"]["max_drop"] == 1
    assert len(parts["general"]["subjects"]) == 7 and len(parts["devops"]["subjects"]) == 6
    out = capsys.readouterr().out
    assert "· devops (6 subjects)" in out and "· general (7 subjects)" in out


def test_one_gate_fails_kept_devops_with_general_lost(both_parts, tmp_path, capsys):
    import xml.etree.ElementTree as ET

    code, verdict = _gate(both_parts, "lost-general", tmp_path)
    assert code == 1 and not verdict["passed"]
    parts = {v["part"]: v for v in verdict["verdicts"]}
    assert parts["devops"]["passed"] and not parts["general"]["passed"]
    assert any("general-max-drop 2.00 and significant" in reason for reason in parts["general"]["decided_by"])
    suites = ET.parse(tmp_path / "lost-general.xml").getroot().findall("testsuite")
    assert [s.get("failures") != "0" for s in suites] == [False, True]
    assert "general (7 subjects)" in suites[1].get("name")
    assert "❌ DevOps-Eval gate: regression" in capsys.readouterr().out


def test_the_general_part_can_be_a_run_of_its_own(both_parts, tmp_path, capsys):
    """A DevOps run and a general run, gated at once: --baseline/--candidate in pairs."""
    root = tmp_path / "split"
    devops = [s.key for s in devops_subjects()]
    for name in ("baseline", "lost-general"):
        run = load_run(both_parts[name])
        for part, keys in (("devops", devops), ("general", [k for k in run.settings.subjects if k not in devops])):
            view = run.restricted(keys)
            (root / name / part).mkdir(parents=True)
            SampleLog(root / name / part / "samples.jsonl").append(view.samples)
            write_json(root / name / part / "results.json", view.record.to_json())
            seal_run(root / name / part)
    code = main(["gate", "--baseline", str(root / "baseline" / "devops"), "--candidate", str(root / "lost-general" / "devops"),
                 "--baseline", str(root / "baseline" / "general"), "--candidate", str(root / "lost-general" / "general"),
                 "--general-max-drop", "2", "--json", str(tmp_path / "v.json")])
    assert code == 1
    verdicts = json.loads((tmp_path / "v.json").read_text())["verdicts"]
    assert [(v["part"], v["passed"]) for v in verdicts] == [(None, True), ("general", False)]
    capsys.readouterr()
    assert main(["gate", "--baseline", str(root / "baseline" / "devops"), "--candidate", str(root / "lost-general" / "devops"),
                 "--general-max-drop", "2"]) == 2
    assert "the runs have no general subjects" in capsys.readouterr().err


def test_gate_and_report_look_at_the_subjects_or_groups_asked_for(both_parts, general_run, tmp_path, capsys):
    # the lost general ability is out of view with --group devops
    code = main(["gate", "--baseline", str(both_parts["baseline"]), "--candidate", str(both_parts["lost-general"]),
                 "--group", "devops", "--json", str(tmp_path / "v.json")])
    assert code == 0
    assert [v["part"] for v in json.loads((tmp_path / "v.json").read_text())["verdicts"]] == [None]
    capsys.readouterr()
    assert main(["report", str(general_run), "--group", "ceval-hard"]) == 0
    report = capsys.readouterr().out
    assert "| Advanced Mathematics |" in report and "| Agronomy |" not in report
    assert main(["report", str(general_run), "--group", "devops"]) == 2
    assert "has none of the subjects of devops" in capsys.readouterr().err
    assert main(["report", str(general_run), "--subjects", "computer_network"]) == 2
    assert "'computer_network' is neither a subject of" in capsys.readouterr().err


def test_contamination_scans_for_a_groups_questions(data_dir, tmp_path, capsys):
    """A general question pasted into training text is found with --group general, not with the default."""
    [hard] = load_local(data_dir, builtin_registry().select(["advanced_mathematics"]))
    q = hard.questions[3]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "复习资料。" + q.question + " " + " ".join(q.options)}, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    assert main(["contamination", "--files", str(corpus), "--data-dir", str(data_dir), "--json", str(tmp_path / "a.json")]) == 0
    assert main(["contamination", "--files", str(corpus), "--data-dir", str(data_dir), "--group", "ceval-stem",
                 "--json", str(tmp_path / "b.json")]) == 1
    found = json.loads((tmp_path / "b.json").read_text())["found"]
    assert [(f["subject"], f["id"]) for f in found] == [("advanced_mathematics", 3)]
    capsys.readouterr()


@pytest.mark.slow
def test_the_general_speed_benchmark_runs(tiny_model, data_dir, tmp_path):
    """benchmarks/general_speed.py end to end on a tiny model and a small limit (the README's figures are Gemma's)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "general_speed.py"), "--data-dir", str(data_dir),
                           "--model", str(tiny_model), "--dtype", "float32", "--group", "ceval-hard", "--few", "ceval-other",
                           "--limit", "2", "--json", str(out), "--allow-busy"], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["runs"]["zero_shot"]["questions"] == result["runs"]["five_shot"]["questions"] == 7 * 2
    assert result["runs"]["few_subjects"]["subjects"] == 11
    assert result["five_to_zero_wall"] > 0 and result["machine"]["cpu_model"]
    assert "busy" in result["load"]
