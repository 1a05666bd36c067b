"""Errors a user can act on. The CLI prints the message on one line and exits with `exit_code`."""

from tasks.errors import TaskError
from tasks.errors import first_line as first_line  # re-exported: one way to put an exception in a line


class HarnessError(Exception):
    """A user-fixable problem (bad path, bad flag, incompatible runs); never a bug."""

    exit_code = 2


class ModelError(HarnessError):
    """A model, tokenizer or adapter that cannot be loaded or used for letter scoring."""


class RunError(HarnessError):
    """A run directory that is missing, corrupt, or holds a run with other settings."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it ends as Ctrl-C does: the same clean-up, one
    line, exit code 143 (128 + 15) instead of 130."""

    exit_code = 143


def one_line(text) -> str:
    """`text` with line breaks and other unprintable characters as escapes (\\n, \\x1b, \\u2028):
    an error that names a path holding a newline is still exactly one line, and cannot move the cursor."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


# What the CLI turns into one line and an exit code instead of a traceback.
USER_ERRORS = (HarnessError, TaskError)
