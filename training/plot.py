"""`--plot_loss`: the loss curve of a run as a PNG, from the Trainer's log history."""

from __future__ import annotations

from pathlib import Path

LOSS_PLOT = "training_loss.png"


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's exponential moving average, debiased so the first points are not pulled to zero."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_loss(log_history: list[dict], output_dir: str | Path) -> Path | None:
    """Write training (and eval, when there is any) loss against step; None if nothing was logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    held_out = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if not train and not held_out:
        return None
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)  # a canvas without pyplot: no global backend state
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.35, label="train loss")
        ax.plot(steps, smooth(list(losses)), color="tab:blue", label="train loss (smoothed)")
    if held_out:
        steps, losses = zip(*held_out)
        ax.plot(steps, losses, "o-", color="tab:orange", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss of {Path(output_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(output_dir) / LOSS_PLOT
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
