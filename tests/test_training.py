"""`harness train`: pt and sft, full and LoRA, on a tiny real Qwen2 with the example data; checkpoints
that `harness eval` takes as they are; DeepSpeed ZeRO-2/3 under torchrun (gloo) in the slow set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.conversation import get_template
from training.args import parse_train_args
from training.errors import DatasetError
from training.preprocess import IGNORE_INDEX, pretrain_blocks, supervised_examples

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "training" / "data"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")  # datasets' caches stay out of the user's


def _train(model, out, hf_cache, *extra, stage="sft", dataset=None, template="chatml", finetuning="lora"):
    dataset = dataset or ("devops_corpus" if stage == "pt" else "devops_qa")
    argv = [
        "train", "--stage", stage, "--model_name_or_path", str(model), "--dataset", dataset,
        "--dataset_dir", str(EXAMPLES), "--template", template, "--finetuning_type", finetuning,
        "--output_dir", str(out), "--cache_dir", str(hf_cache), "--report_to", "none",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate", "1e-2",
        "--max_steps", "4", "--seed", "0", *extra,
    ]
    assert main(argv) == 0
    return out


def _log_history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def _eval(model, out, data_dir, *extra):
    return main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out),
                 "--shots", "0", "--limit", "2", "--no-progress", *extra])


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def _tokenizer(model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# --- preprocessing: exact tokens -----------------------------------------------------------------


def _qa_rows(rows):
    from datasets import Dataset

    return Dataset.from_list(rows), {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": None}


def test_sft_labels_are_exactly_the_response_and_its_stop_token(tiny_model):
    from harness.conversation import get_template

    tok = _tokenizer(tiny_model)
    rows, columns = _qa_rows([{"instruction": "什么是金丝雀发布？", "input": "", "output": "先放少量流量。", "history": []}])
    ex = supervised_examples(rows, columns, tok, get_template("chatml"), 512, 512, name="t")[0]
    assert tok.decode(ex["input_ids"]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n什么是金丝雀发布？<|im_end|>\n"
        "<|im_start|>assistant\n先放少量流量。<|im_end|>"
    )
    labelled = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE_INDEX]
    assert tok.decode(labelled) == "先放少量流量。<|im_end|>"
    # every labelled token is a suffix of the input: the loss never sees the prompt
    first = ex["labels"].index(next(label for label in ex["labels"] if label != IGNORE_INDEX))
    assert all(label == IGNORE_INDEX for label in ex["labels"][:first])
    assert ex["labels"][first:] == ex["input_ids"][first:]


def test_sft_history_turns_carry_loss_on_every_response(tiny_model):
    from harness.conversation import get_template

    tok = _tokenizer(tiny_model)
    rows, columns = _qa_rows([{"instruction": "怎么回滚？", "input": "kubectl", "output": "rollout undo",
                               "history": [["怎么看历史？", "rollout history"]]}])
    ex = supervised_examples(rows, columns, tok, get_template("default"), 512, 512, name="t")[0]
    eos = tok.eos_token
    assert tok.decode(ex["input_ids"]).endswith(
        "\nHuman: 怎么看历史？\nAssistant: rollout history" + eos + "\nHuman: 怎么回滚？\nkubectl\nAssistant: rollout undo" + eos
    )
    spans, span = [], []
    for i, label in zip(ex["input_ids"], ex["labels"]):
        if label != IGNORE_INDEX:
            span.append(i)
        elif span:
            spans.append(tok.decode(span)), span.clear()
    spans.append(tok.decode(span))
    assert spans == ["rollout history" + eos, "rollout undo" + eos]


def test_bad_history_error_names_the_row_of_the_data_empty_rows_counted(tiny_model):
    from harness.conversation import get_template

    rows, columns = _qa_rows([
        {"instruction": "", "input": "", "output": "skipped: no prompt", "history": []},
        {"instruction": "怎么回滚？", "input": "", "output": "rollout undo", "history": []},
        {"instruction": "怎么看历史？", "input": "", "output": "rollout history", "history": [["no response"]]},
    ])
    with pytest.raises(DatasetError, match=r"dataset 't', row 2: history must be a list of \[query, response\] pairs"):
        supervised_examples(rows, columns, _tokenizer(tiny_model), get_template("chatml"), 512, 512, name="t")
    examples = supervised_examples(rows.select([0, 1]), columns, _tokenizer(tiny_model), get_template("chatml"), 512, 512, name="t")
    assert len(examples) == 1  # the empty row still trains nothing


def test_sft_system_column_replaces_the_templates_system_text(tiny_model):
    from datasets import Dataset

    from harness.conversation import get_template

    tok = _tokenizer(tiny_model)
    rows = Dataset.from_list([{"q": "查看日志", "a": "journalctl -u nginx", "sys": "你是运维助手。"}])
    columns = {"prompt": "q", "query": None, "response": "a", "history": None, "system": "sys"}
    ex = supervised_examples(rows, columns, tok, get_template("chatml"), 512, 512, name="t")[0]
    assert tok.decode(ex["input_ids"]).startswith("<|im_start|>system\n你是运维助手。<|im_end|>\n<|im_start|>user\n查看日志")


def test_sft_truncates_prompt_and_response_per_turn(tiny_model):
    from harness.conversation import get_template

    tok = _tokenizer(tiny_model)
    rows, columns = _qa_rows([{"instruction": "部署 " * 50, "input": "", "output": "回答 " * 50, "history": []}])
    ex = supervised_examples(rows, columns, tok, get_template("chatml"), 16, 8, name="t")[0]
    assert len(ex["input_ids"]) == 16 + 8
    assert ex["labels"][:16] == [IGNORE_INDEX] * 16 and IGNORE_INDEX not in ex["labels"][16:]


def test_pt_concatenates_texts_with_eos_into_full_blocks(tiny_model):
    from datasets import Dataset

    tok = _tokenizer(tiny_model)
    texts = ["持续集成要求频繁合入主干。", "蓝绿部署可以快速回滚。", "金丝雀发布先放少量流量。"]
    stream = [t for text in texts for t in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    blocks = pretrain_blocks(Dataset.from_dict({"text": texts}), {"prompt": "text"}, tok, 8)
    assert len(blocks) == len(stream) // 8
    assert [t for b in blocks["input_ids"] for t in b] == stream[: len(blocks) * 8]
    assert blocks["labels"] == blocks["input_ids"] and all(len(b) == 8 for b in blocks["input_ids"])


# --- arguments and errors ------------------------------------------------------------------------

SEED_PT_ARGS = [  # the seed's pt script, entry point and data names aside
    "--deepspeed", str(ROOT / "training" / "ds_zero2.json"), "--stage", "pt", "--do_train",
    "--report_to", "tensorboard", "--dataset", "devops_corpus", "--template", "default",
    "--finetuning_type", "full", "--overwrite_cache", "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "8", "--gradient_accumulation_steps", "1", "--lr_scheduler_type", "cosine",
    "--warmup_ratio", "0.05", "--evaluation_strategy", "steps", "--logging_steps", "10", "--max_steps", "1000",
    "--save_steps", "1000", "--eval_steps", "1000", "--learning_rate", "5e-6", "--plot_loss",
    "--max_source_length=2048", "--dataloader_num_workers", "8", "--val_size", "0.01", "--bf16",
    "--overwrite_output_dir",
]


def test_seed_arguments_parse_with_their_transformers_5_meaning(tiny_model, tmp_path):
    args = parse_train_args([*SEED_PT_ARGS, "--model_name_or_path", str(tiny_model),
                             "--dataset_dir", str(EXAMPLES), "--output_dir", str(tmp_path / "out")])
    t = args.training
    assert t.eval_strategy == "steps" and t.eval_steps == 1000 and t.save_steps == 1000
    assert t.warmup_steps == 0.05  # transformers 5: a fraction of the training steps
    assert t.bf16 and t.lr_scheduler_type == "cosine" and t.deepspeed.endswith("ds_zero2.json")
    assert args.finetuning.overwrite_output_dir and args.finetuning.plot_loss and args.data.overwrite_cache
    assert args.data.max_source_length == 2048 and args.data.val_size == 0.01


def _one_line_error(capsys, argv, code=2) -> str:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("info: ")]  # progress before it
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def base_argv(tiny_model, tmp_path, hf_cache):
    return ["train", "--model_name_or_path", str(tiny_model), "--dataset_dir", str(EXAMPLES),
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(hf_cache), "--report_to", "none"]


def test_unknown_stage_is_one_line(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "rm", "--dataset", "devops_qa"])
    assert "--stage" in line and "'rm'" in line and "pt" in line and "sft" in line


def test_unknown_dataset_names_the_registry_and_its_datasets(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_wiki"])
    assert "unknown dataset 'devops_wiki'" in line and "dataset_info.json defines devops_corpus, devops_qa" in line


def test_dataset_of_another_stage_is_refused(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_qa"])
    assert "dataset 'devops_qa' is for stage sft, not pt" in line and "devops_corpus" in line


def test_unknown_template_is_one_line(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "sft", "--dataset", "devops_qa", "--template", "qwen"])
    assert "unknown template 'qwen'; choose one of default, chatml" in line


def test_sft_without_template_is_one_line(capsys, base_argv):
    assert "--stage sft needs --template" in _one_line_error(capsys, [*base_argv, "--stage", "sft", "--dataset", "devops_qa"])


def test_unrecognized_argument_is_one_line(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_corpus", "--lora_rnak", "4"])
    assert "unrecognized arguments: --lora_rnak 4" in line


def test_a_model_config_that_is_not_a_json_object_is_one_line(capsys, base_argv, tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("null")
    argv = [*base_argv, "--stage", "sft", "--dataset", "devops_qa", "--template", "chatml"]
    argv[argv.index(str(tiny_model))] = str(broken)
    assert f"{broken / 'config.json'} must hold a JSON object, not null" in _one_line_error(capsys, argv)
    assert not (tmp_path / "out").exists()


def test_evaluation_without_held_out_data_is_one_line(capsys, base_argv):
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_corpus", "--evaluation_strategy", "steps"])
    assert "--eval_strategy steps needs held-out examples: pass --val_size" in line


def test_lora_target_that_matches_no_module_is_one_line(capsys, base_argv, tmp_path):
    line = _one_line_error(capsys, [*base_argv, "--stage", "sft", "--dataset", "devops_qa", "--template", "chatml",
                                    "--finetuning_type", "lora", "--lora_target", "W_pack"])
    assert line.startswith("harness train: error: --lora_target W_pack:") and "W_pack" in line
    assert not (tmp_path / "out").exists()  # no run record either: the corrected command must not find it


def test_a_run_that_fails_to_start_does_not_block_the_corrected_one(capsys, tiny_model, base_argv, tmp_path, hf_cache):
    argv = [*base_argv, "--stage", "sft", "--dataset", "devops_qa", "--template", "chatml", "--finetuning_type", "lora"]
    _one_line_error(capsys, [*argv, "--lora_target", "nonexistent_proj"])
    _train(tiny_model, tmp_path / "out", hf_cache, "--max_steps", "1", "--save_strategy", "no")
    assert (tmp_path / "out" / "harness_train.json").is_file()


def test_interrupted_run_leaves_nothing_or_what_resumes(tiny_model, tmp_path, hf_cache, monkeypatch):
    from transformers import Trainer, TrainerCallback

    class CtrlC(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            raise KeyboardInterrupt

    argv = ["train", "--stage", "sft", "--model_name_or_path", str(tiny_model), "--dataset", "devops_qa",
            "--dataset_dir", str(EXAMPLES), "--template", "chatml", "--finetuning_type", "full",
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(hf_cache), "--report_to", "tensorboard",
            "--per_device_train_batch_size", "4", "--logging_steps", "1", "--max_steps", "3", "--save_steps", "2"]
    train, save = Trainer.train, Trainer._save_checkpoint

    def interrupt_at_first_step(self, *a, **k):
        self.add_callback(CtrlC)
        return train(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", interrupt_at_first_step)
    assert main(argv) == 130  # before the first checkpoint: nothing to resume, nothing left
    assert not (tmp_path / "out").exists()

    def interrupt_after_saving(self, *a, **k):
        save(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", train)
    monkeypatch.setattr(Trainer, "_save_checkpoint", interrupt_after_saving)
    assert main(argv) == 130  # after it: the checkpoint and the record stay, and the rerun resumes
    assert (tmp_path / "out" / "checkpoint-2").is_dir() and (tmp_path / "out" / "harness_train.json").is_file()
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    assert main(argv) == 0
    assert [h["step"] for h in _log_history(tmp_path / "out") if "loss" in h] == [1, 2, 3]


def test_resume_from_a_missing_checkpoint_is_one_line_before_anything_is_written(capsys, base_argv, tmp_path):
    argv = [*base_argv, "--stage", "pt", "--dataset", "devops_corpus", "--finetuning_type", "full"]
    line = _one_line_error(capsys, [*argv, "--resume_from_checkpoint", str(tmp_path / "nope")])
    assert line.startswith(f"harness train: error: --resume_from_checkpoint {tmp_path / 'nope'}: no such directory")
    (tmp_path / "empty").mkdir()
    line = _one_line_error(capsys, [*argv, "--resume_from_checkpoint", str(tmp_path / "empty")])
    assert "not a training checkpoint (no trainer_state.json)" in line
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_is_one_line(capsys, base_argv, tmp_path):
    (tmp_path / "out").write_text("mine")
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_corpus"])
    assert f"--output_dir {tmp_path / 'out'} is not a directory" in line
    assert (tmp_path / "out").read_text() == "mine"


def test_several_datasets_are_concatenated_in_order(tiny_model, tmp_path, hf_cache):
    from training import registry
    from training.workflow import build_dataset

    args = parse_train_args(["--stage", "sft", "--model_name_or_path", str(tiny_model), "--dataset", "devops_qa,devops_qa",
                             "--dataset_dir", str(EXAMPLES), "--template", "default", "--output_dir", str(tmp_path),
                             "--cache_dir", str(hf_cache), "--max_samples", "3"])
    specs = registry.resolve(EXAMPLES, ["devops_qa", "devops_qa"], "sft")
    dataset = build_dataset(args, specs, _tokenizer(tiny_model), get_template("default"))
    assert len(dataset) == 6 and dataset[0]["input_ids"] == dataset[3]["input_ids"]


def test_non_empty_output_dir_without_checkpoint_is_refused(capsys, base_argv, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_corpus", "--finetuning_type", "full"])
    assert "exists and is not empty; pass --overwrite_output_dir" in line
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    line = _one_line_error(capsys, [*base_argv, "--stage", "pt", "--dataset", "devops_corpus", "--finetuning_type", "full",
                                    "--overwrite_output_dir"])
    assert "is not empty and holds no training run" in line  # the flag replaces a run, not someone's files
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_user_mistakes_reach_the_shell_as_one_line_without_traceback(tiny_model, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "train", "--stage", "pt", "--model_name_or_path", str(tiny_model),
         "--dataset", "devops_qa", "--dataset_dir", str(EXAMPLES), "--output_dir", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()  # nothing from the libraries either (DeepSpeed's and bitsandbytes' CPU notices)
    assert lines == ["harness train: error: dataset 'devops_qa' is for stage sft, not pt (--stage pt); "
                     "pt datasets in " + str(EXAMPLES / "dataset_info.json") + ": devops_corpus"]


def _script_argv(script: Path, **env) -> list[str]:
    """The arguments an example script gives `harness train` (torchrun replaced by a printer)."""
    printer = 'torchrun() { printf "%s\\n" "$@"; }; export -f torchrun; bash "$0"'
    proc = subprocess.run(["bash", "-c", printer, str(script)], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, check=True)
    argv = proc.stdout.splitlines()
    start = argv.index("-m")
    assert argv[start : start + 3] == ["-m", "harness", "train"]
    return argv[start + 3 :]


@pytest.mark.parametrize("script, overrides", [
    ("devops-model-pt.sh", ["--max_source_length=64"]),
    ("devops-model-sft.sh", []),
])
def test_example_scripts_run_with_the_seeds_arguments(script, overrides, tiny_model, tmp_path, hf_cache):
    argv = _script_argv(ROOT / "training" / "examples" / script, MODEL=str(tiny_model), OUTPUT=str(tmp_path / "out"))
    at = argv.index("--deepspeed")
    assert (ROOT / argv[at + 1]).is_file()
    del argv[at : at + 2]  # DeepSpeed under torchrun is the slow tests' business
    short = ["--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--logging_steps", "1",
             "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0", "--cache_dir", str(hf_cache)]
    assert main(["train", *argv, *short, *overrides]) == 0
    assert [h["step"] for h in _log_history(tmp_path / "out") if "eval_loss" in h] == [2]
    assert (tmp_path / "out" / "training_loss.png").is_file()


# --- the registry -------------------------------------------------------------------------------


def _registry(tmp_path, entries: dict, files: dict) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return tmp_path


def test_registry_reads_txt_and_csv_and_checks_sha1(tmp_path, hf_cache):
    from training import registry

    root = _registry(
        tmp_path,
        {"notes": {"file_name": "notes.txt", "stage": "pt"},
         "faq": {"file_name": "faq.csv", "columns": {"prompt": "q", "response": "a"}, "stage": "sft",
                 "file_sha1": "0" * 40}},
        {"notes.txt": "第一行文本\nsecond line\n", "faq.csv": "q,a\n什么是 SLO?,服务等级目标\n007,\n"},
    )
    (notes,) = registry.resolve(root, ["notes"], "pt")
    rows, columns = registry.load(notes, "pt", str(hf_cache))
    assert columns["prompt"] == "text" and rows["text"] == ["第一行文本", "second line"]
    with pytest.raises(DatasetError, match=r"faq.csv has sha1 [0-9a-f]{40}, the registry says 0{40}"):
        registry.resolve(root, ["faq"], "sft")


def test_registry_names_a_missing_column(tmp_path, hf_cache):
    from training import registry

    root = _registry(tmp_path, {"qa": {"file_name": "qa.jsonl", "stage": "sft"}},
                     {"qa.jsonl": json.dumps({"question": "q", "answer": "a"}) + "\n"})
    (spec,) = registry.resolve(root, ["qa"], "sft")
    with pytest.raises(DatasetError, match=r"dataset 'qa': no column 'instruction' for prompt \(its columns: question, answer\)"):
        registry.load(spec, "sft", str(hf_cache))


def test_example_registry_hashes_match_the_files():
    from training import registry

    for name, entry in registry.read_registry(EXAMPLES).items():
        registry.resolve(EXAMPLES, [name], entry["stage"])  # raises on a sha1 mismatch


def test_example_data_shares_no_text_with_the_benchmark(data_dir):
    import csv

    bench = []
    for path in data_dir.rglob("*.csv"):
        with path.open(encoding="utf-8", newline="") as f:
            bench.extend(" ".join(row) for row in csv.reader(f))
    bench_text = "\n".join(bench)
    ours = [json.loads(line)["text"] for line in (EXAMPLES / "devops_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in json.loads((EXAMPLES / "devops_qa.json").read_text(encoding="utf-8")):
        ours += [row["instruction"], row["input"], row["output"], *(x for turn in row["history"] for x in turn)]
    span = 14
    shared = {t[i : i + span] for t in ours for i in range(len(t) - span + 1) if t[i : i + span] in bench_text}
    assert not shared


# --- training runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pt_full(tiny_model, tmp_path_factory, hf_cache):
    """The seed's pt flags (minus DeepSpeed) for a few steps: full fine-tuning, held-out loss, plot, TensorBoard."""
    out = tmp_path_factory.mktemp("pt") / "out"
    return _train(
        tiny_model, out, hf_cache, "--max_source_length=32", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.05",
        "--evaluation_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", "--val_size", "0.05",
        "--plot_loss", "--overwrite_cache", "--overwrite_output_dir", "--report_to", "tensorboard",
        stage="pt", template="default", finetuning="full",
    )


def test_pt_full_output_is_a_checkpoint_harness_eval_scores(pt_full, data_dir, tmp_path):
    assert (pt_full / "model.safetensors").is_file() and (pt_full / "tokenizer_config.json").is_file()
    assert _eval(pt_full, tmp_path / "run", data_dir) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["overall"]["n"] == 12 and results["model"]["path"] == str(pt_full)


def test_pt_logs_train_and_held_out_loss_plot_and_tensorboard(pt_full):
    history = _log_history(pt_full)
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert [h["step"] for h in history if "eval_loss" in h] == [2, 4]
    assert (pt_full / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((pt_full / "runs").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in pt_full.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_run_record_holds_arguments_data_hashes_and_versions(pt_full):
    record = json.loads((pt_full / "harness_train.json").read_text())
    assert record["finetuning"]["stage"] == "pt" and record["data"]["max_source_length"] == 32
    assert record["data"]["files"] == {"devops_corpus": {str(EXAMPLES / "devops_corpus.jsonl"): "d7ab6f70d7e6e28a998d1c3e70c3ee1d99ce6dc3"}}
    assert record["training"]["eval_strategy"] == "steps" and record["training"]["warmup_steps"] == 0.05
    assert record["harness"]["version"] and record["software"]["transformers"]


def test_pt_changes_the_weights(pt_full, tiny_model):
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(pt_full).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_loss_falls_when_the_same_batch_is_repeated(tiny_model, tmp_path, hf_cache):
    # Four examples, batch size four: every step sees the same batch.
    out = _train(tiny_model, tmp_path / "out", hf_cache, "--max_samples", "4", "--max_steps", "8",
                 "--save_strategy", "no", finetuning="full")
    losses = [h["loss"] for h in _log_history(out) if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_resuming_picks_up_the_last_checkpoint(tiny_model, tmp_path, hf_cache):
    out = _train(tiny_model, tmp_path / "out", hf_cache, "--max_steps", "2", "--save_steps", "2", finetuning="full")
    _train(tiny_model, out, hf_cache, "--max_steps", "3", "--save_steps", "2", finetuning="full")
    assert [h["step"] for h in _log_history(out) if "loss" in h] == [1, 2, 3]


def test_overwrite_output_dir_starts_afresh_without_old_checkpoints(tiny_model, tmp_path, hf_cache):
    out = _train(tiny_model, tmp_path / "out", hf_cache, "--max_steps", "3", "--save_steps", "3", finetuning="full")
    _train(tiny_model, out, hf_cache, "--max_steps", "2", "--save_steps", "2", "--overwrite_output_dir", finetuning="full")
    assert [h["step"] for h in _log_history(out) if "loss" in h] == [1, 2]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def test_overwrite_output_dir_leaves_only_this_runs_files(tiny_model, tmp_path, hf_cache):
    # A LoRA run, then a full one over it: no stale adapter may stay for `harness eval --model OUT` to apply.
    out = _train(tiny_model, tmp_path / "out", hf_cache, "--max_steps", "3", "--save_steps", "3")
    assert (out / "adapter_config.json").is_file()
    (out / "notes.txt").write_text("inside a training run's directory: replaced with it")
    full = ("--max_steps", "2", "--save_steps", "2")
    _train(tiny_model, out, hf_cache, *full, "--overwrite_output_dir", finetuning="full")
    fresh = _train(tiny_model, tmp_path / "fresh", hf_cache, *full, finetuning="full")

    def listing(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*"))

    assert listing(out) == listing(fresh)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def sft_lora(tiny_model, tmp_path_factory, hf_cache, data_dir):
    """sft with LoRA and chatml, scored on the DevOps task at each save (two saves)."""
    out = tmp_path_factory.mktemp("sft") / "out"
    return _train(
        tiny_model, out, hf_cache, "--save_steps", "2", "--lora_rank", "4", "--report_to", "tensorboard",
        "--eval_devops_shots", "0,5", "--eval_devops_limit", "1", "--eval_devops_data_dir", str(data_dir),
    )


def test_sft_lora_output_is_an_adapter_on_its_base(sft_lora, tiny_model):
    config = json.loads((sft_lora / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model)
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (sft_lora / "adapter_model.safetensors").is_file() and (sft_lora / "tokenizer_config.json").is_file()
    assert not (sft_lora / "model.safetensors").exists()


def test_lora_adapter_loads_in_harness_eval_both_ways(sft_lora, tiny_model, data_dir, tmp_path):
    assert _eval(sft_lora, tmp_path / "a", data_dir) == 0
    assert _eval(tiny_model, tmp_path / "b", data_dir, "--adapter", str(sft_lora)) == 0
    assert [s["logits"] for s in _samples(tmp_path / "a")] == [s["logits"] for s in _samples(tmp_path / "b")]
    assert json.loads((tmp_path / "a" / "results.json").read_text())["model"]["adapter"] == str(sft_lora)


def test_reloaded_adapter_gives_the_logits_training_ended_with(sft_lora, data_dir, tmp_path):
    # The in-training score of the last step used the model in memory; the reload must match it exactly.
    during = sft_lora / "devops-eval" / "step-4" / "shots-0"
    assert _eval(sft_lora / "checkpoint-4", tmp_path / "after", data_dir, "--limit", "1") == 0
    assert [s["logits"] for s in _samples(during)] == [s["logits"] for s in _samples(tmp_path / "after")]


def test_lora_changes_the_base_models_logits(sft_lora, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    base_logits = _logits(base, ids)
    tuned = PeftModel.from_pretrained(base, sft_lora).eval()
    assert not torch.allclose(base_logits, _logits(tuned, ids))


def test_devops_scores_at_each_save_become_run_records_and_scalars(sft_lora, data_dir):
    for step in (2, 4):
        for shots in (0, 5):
            results = json.loads((sft_lora / "devops-eval" / f"step-{step}" / f"shots-{shots}" / "results.json").read_text())
            assert results["protocol"]["shots"] == shots and results["overall"]["n"] == 6
            assert results["model"]["name"] == str(sft_lora / f"checkpoint-{step}")
            assert results["model"]["training_step"] == step
            assert results["task"]["data_source"]["dir"] == str(data_dir.resolve())
    logged = [h for h in _log_history(sft_lora) if "eval_devops_0shot_accuracy" in h]
    assert [h["step"] for h in logged] == [2, 4] and all("eval_devops_5shot_accuracy" in h for h in logged)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (sft_lora / "runs").rglob("events.out.tfevents.*")}
    scalars = EventAccumulator(str(events)).Reload().Scalars("eval/devops_0shot_accuracy")
    assert [e.step for e in scalars] == [2, 4]
    assert [e.value for e in scalars] == pytest.approx([h["eval_devops_0shot_accuracy"] for h in logged])


def test_merge_writes_a_plain_model_with_the_adapters_logits_and_training_record(sft_lora, tiny_model, tmp_path, data_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = tmp_path / "merged"
    assert main(["train", "merge", "--model", str(tiny_model), "--adapter", str(sft_lora), "--output", str(merged)]) == 0
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert (merged / "harness_train.json").read_bytes() == (sft_lora / "harness_train.json").read_bytes()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), sft_lora).eval()
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    torch.testing.assert_close(_logits(plain, ids), _logits(adapted, ids), atol=1e-5, rtol=1e-5)
    assert _eval(merged, tmp_path / "run", data_dir) == 0


def test_merge_refuses_a_non_empty_output(sft_lora, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    line = _one_line_error(capsys, ["train", "merge", "--adapter", str(sft_lora), "--output", str(tmp_path / "taken")])
    assert "--output" in line and "exists and is not empty" in line


# --- DeepSpeed under torchrun (gloo on CPU) ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, *argv, nproc=2):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "harness", "train", *argv]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "torchrun.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_save_a_checkpoint_eval_takes(tiny_model, tmp_path, data_dir):
    out = tmp_path / "z2"
    _torchrun(tmp_path, "--deepspeed", str(ROOT / "training" / "ds_zero2.json"), "--stage", "pt",
              "--model_name_or_path", str(tiny_model), "--dataset", "devops_corpus", "--dataset_dir", str(EXAMPLES),
              "--template", "default", "--finetuning_type", "full", "--output_dir", str(out),
              "--cache_dir", str(tmp_path / "cache"), "--max_source_length", "32", "--per_device_train_batch_size", "2",
              "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1", "--learning_rate", "1e-3",
              "--report_to", "none", "--dataloader_num_workers", "0")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (out / "checkpoint-3").is_dir()
    assert _eval(out, tmp_path / "run", data_dir) == 0


@pytest.mark.slow
def test_deepspeed_zero3_saves_full_model_safetensors_and_scores_at_saves(tiny_model, tmp_path, data_dir):
    from safetensors.torch import load_file

    out = tmp_path / "z3"
    _torchrun(tmp_path, "--deepspeed", str(ROOT / "training" / "ds_zero3.json"), "--stage", "sft",
              "--model_name_or_path", str(tiny_model), "--dataset", "devops_qa", "--dataset_dir", str(EXAMPLES),
              "--template", "chatml", "--finetuning_type", "full", "--output_dir", str(out),
              "--cache_dir", str(tmp_path / "cache"), "--per_device_train_batch_size", "2", "--max_steps", "2",
              "--save_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3", "--report_to", "none",
              "--eval_devops_shots", "0", "--eval_devops_limit", "1", "--eval_devops_data_dir", str(data_dir))
    weights = load_file(out / "model.safetensors")
    base = load_file(Path(tiny_model) / "model.safetensors")
    assert weights.keys() == base.keys()
    assert all(weights[k].shape == base[k].shape for k in base)  # whole tensors, not ZeRO-3 shards
    assert any(not torch.equal(weights[k], base[k]) for k in base)
    during = _samples(out / "devops-eval" / "step-2" / "shots-0")
    assert _eval(out / "checkpoint-2", tmp_path / "after", data_dir, "--limit", "1") == 0
    after = _samples(tmp_path / "after")
    # Not bit-identical: the torchrun processes run one thread each, this one several.
    assert [s["pred"] for s in during] == [s["pred"] for s in after]
    assert torch.allclose(torch.tensor([s["logits"] for s in during]), torch.tensor([s["logits"] for s in after]), atol=1e-4)
