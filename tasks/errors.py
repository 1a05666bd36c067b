"""Errors in what is evaluated: task names, data files, protocols."""


class TaskError(Exception):
    """A user-fixable problem with task data or settings; its message names the file, row or name."""

    exit_code = 2
