"""`harness chat`: talk to a model, interactively on a terminal or through `--prompt` turns.

What goes where: stdout carries only answers (plain: each answer then one newline; `--jsonl`: one
JSON object per answer and line); the banner, notices, errors and `--show-prompt` go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from harness.commands.args import add_model_arguments, cache_dir, model_spec
from harness.conversation import TEMPLATES
from harness.errors import HarnessError, Terminated, one_line

if TYPE_CHECKING:  # harness.chat loads torch; the parser must not
    from harness.chat import Conversation, Reply

log = logging.getLogger(__name__)

INPUT_MARKER = ">>> "
RESET, EXIT = "/reset", "/exit"


def register(sub) -> None:
    p = sub.add_parser(
        "chat",
        help="talk to a model: an interactive multi-turn session, or answers to --prompt turns",
        description=(
            "Chat with any model harness eval takes. Interactive: type a message; /reset clears the history; "
            "/exit or end of input (Ctrl-D) ends; Ctrl-C stops an answer. With --prompt, answers those turns and "
            "prints only the answers: each followed by one newline, or one JSON object per line with --jsonl "
            "(use it when answers may span lines)."
        ),
    )
    add_model_arguments(p)
    g = p.add_argument_group("conversation")
    g.add_argument(
        "--template",
        choices=(*TEMPLATES, "tokenizer"),  # "tokenizer": harness.chat.TOKENIZER_TEMPLATE
        help="chatml (default) or default, the training templates; tokenizer: the tokenizer's own chat template "
        "(the default for the card's Qwen-1, InternLM and Baichuan2 checkpoints: their model.chat format)",
    )
    g.add_argument("--system", help="system text (default: the template's own)")
    g.add_argument("--prompt", action="append", metavar="TEXT", help="answer this turn and exit; repeat for several turns")
    g.add_argument("--jsonl", action="store_true", help="print each answer as a JSON line: turn, query, answer, finish, new_tokens")
    g.add_argument("--show-prompt", action="store_true", help="write each turn's full rendered prompt to stderr")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=512, help="longest answer in tokens (default 512)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default); above 0 samples")
    g.add_argument("--top-p", type=float, help="nucleus sampling mass (default: the checkpoint's generation config)")
    g.add_argument("--seed", type=int, default=0, help="seed of each turn's sampling (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        return _chat(args)
    except KeyboardInterrupt as e:  # while loading, or in --prompt mode; nothing to resume
        print("harness chat: interrupted", file=sys.stderr)
        return e.exit_code if isinstance(e, Terminated) else 130


def _chat(args) -> int:
    from harness.chat import Conversation, Decoding, check_tokenizer_template, resolve_template, template_warning
    from harness.models import cpu_dtype_note, load_model, load_tokenizer

    decoding = Decoding(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    if args.prompt is not None and not all(p.strip() for p in args.prompt):
        raise HarnessError("--prompt: a turn's text must not be empty")
    spec = model_spec(args)
    template_name, family = default_template(spec, args.template)
    template = resolve_template(template_name)
    if template is None:  # refuse before the weights load, which may take minutes
        check_tokenizer_template(load_tokenizer(spec, cache_dir()), args.model)
    loaded = load_model(spec, cache_dir())
    note = cpu_dtype_note(loaded.info)
    if note:
        print(f"harness chat: {note}", file=sys.stderr)
    conversation = Conversation(loaded.model, loaded.tokenizer, template, args.system, decoding)
    warning = template_warning(loaded.tokenizer, template)
    if warning:
        log.warning(warning)
    if args.prompt is not None:
        show = sys.stderr if args.show_prompt else None
        answer_prompts(conversation, args.prompt, sys.stdout, jsonl=args.jsonl, show_prompt=show)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_line_editing()
        info = loaded.info
        sys.stderr.write(
            f"harness chat: {args.model} ({info.architecture}, {info.dtype}, {info.device}), "
            f"template {template_name}{f' ({family} format: its model.chat turns)' if family else ''}. {RESET} clears the history, {EXIT} or Ctrl-D ends, Ctrl-C stops an answer.\n"
        )
    lines = _terminal_lines(sys.stdout.isatty()) if interactive else _stream_lines(sys.stdin)
    session(conversation, lines, sys.stdout, sys.stderr, jsonl=args.jsonl, show_prompt=args.show_prompt)
    return 0


def default_template(spec, asked: str | None) -> tuple[str, str | None]:
    """The template to chat with, and the card's format it defaults for: a checkpoint in one of
    the card's original formats speaks its family's own (`tokenizer`) unless --template says otherwise."""
    from harness.models import resolve_source

    if asked:
        return asked, None
    fmt = resolve_source(spec, cache_dir()).source_format
    return ("tokenizer", fmt) if fmt else ("chatml", None)


def answer_prompts(
    conversation: Conversation, prompts: Sequence[str], out: TextIO, *, jsonl: bool, show_prompt: TextIO | None
) -> None:
    """Answer each prompt as a turn of one conversation; print only the answers."""
    for query in prompts:
        if show_prompt is not None:
            write_prompt(show_prompt, conversation.render(query).text)
        reply = conversation.ask(query)
        out.write(format_reply(reply, len(conversation.history)) if jsonl else reply.answer + "\n")
        out.flush()


def session(
    conversation: Conversation, lines: Iterator[str], out: TextIO, err: TextIO, *, jsonl: bool, show_prompt: bool
) -> None:
    """The interactive loop: each line a turn or a command, until /exit or the end of `lines`."""
    for line in lines:
        query = line.strip()
        if not query:
            continue
        if query == EXIT:
            break
        if query == RESET:
            conversation.reset()
            err.write("(history cleared)\n")
            continue
        try:
            if show_prompt:
                write_prompt(err, conversation.render(query).text)
            reply = conversation.ask(query, stream=None if jsonl else out)
        except Terminated:
            raise  # SIGTERM ends the session; only Ctrl-C stops just the answer
        except KeyboardInterrupt:
            out.write("\n")
            err.write("(answer stopped; it is not kept in the history)\n")
            continue
        except HarnessError as e:  # e.g. a conversation longer than the context: the session goes on
            err.write(f"harness chat: error: {one_line(e)}\n")
            continue
        out.write(format_reply(reply, len(conversation.history)) if jsonl else "\n")
        out.flush()


def format_reply(reply: Reply, turn: int) -> str:
    """One JSON line; `turn` counts from 1 in the conversation (again after /reset)."""
    record = {"turn": turn, "query": reply.query, "answer": reply.answer, "finish": reply.finish}
    record["new_tokens"] = reply.new_tokens
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_prompt(err: TextIO, text: str) -> None:
    err.write(f"--- prompt ---\n{text}\n--- end of prompt ---\n")
    err.flush()


def _stream_lines(stream: TextIO) -> Iterator[str]:
    # A pipe or file: no input marker, so that stdout holds the answers and nothing else.
    yield from stream


def _terminal_lines(stdout_is_terminal: bool) -> Iterator[str]:
    while True:
        try:
            if stdout_is_terminal:
                yield input(INPUT_MARKER)
            else:  # stdout redirected: the marker must not end up among the answers
                sys.stderr.write(INPUT_MARKER)
                sys.stderr.flush()
                yield input()
        except EOFError:  # Ctrl-D
            sys.stderr.write("\n")
            return
        except Terminated:
            raise
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as a shell does
            sys.stderr.write(f"\n(use {EXIT} or Ctrl-D to leave)\n")


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (input() then edits lines and keeps a history)
    except ImportError:  # not on every platform
        pass
