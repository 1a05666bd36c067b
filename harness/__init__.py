"""DevOps-Eval harness: the engine and the CLI (model loading, prompts, scoring, run records)."""

__version__ = "0.1.0"
