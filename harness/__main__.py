"""`python -m harness ...`: the same CLI as the `harness` console script (and what torchrun runs)."""

from harness.cli import console

console()
