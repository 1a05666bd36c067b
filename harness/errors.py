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


# What the CLI turns into one line and an exit code instead of a traceback.
USER_ERRORS = (HarnessError, TaskError)
