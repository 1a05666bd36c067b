"""Errors in what is evaluated: task names, data files, protocols."""


class TaskError(Exception):
    """A user-fixable problem with task data or settings; its message names the file, row or name."""

    exit_code = 2


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none), for a one-line error."""
    return (str(e).strip() or type(e).__name__).splitlines()[0]
