"""Training mistakes a user can fix; the CLI prints them as one line and exits 2."""

from harness.errors import HarnessError


class TrainingError(HarnessError):
    """A bad training argument, an output directory in the way, a model LoRA cannot target."""


class DatasetError(TrainingError):
    """A dataset registry entry, data file, column or row that cannot be used; names which one."""
