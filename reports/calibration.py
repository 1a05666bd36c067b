"""Calibration of a run: does the probability of the chosen letter match how often it is right?

The probability is the softmax over the four stored letter logits (the model's belief restricted
to A–D). Confidences are binned into ten equal bins on [0, 1] (with four letters the chosen one
always has at least 0.25); the expected calibration error (ECE) is the count-weighted mean gap
between a bin's accuracy and its mean confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.records import Sample
from reports.output import png_bytes, pyplot

BINS = 10


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    confidence: float | None  # mean probability of the chosen letter; None for an empty bin
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    bins: list[Bin]
    n: int
    accuracy: float
    mean_confidence: float
    ece: float


def confidence(sample: Sample) -> float:
    """Softmax probability of the predicted letter."""
    return sample.probability(sample.pred)


def calibration(samples: list[Sample], bins: int = BINS) -> Calibration:
    conf = np.array([confidence(s) for s in samples], dtype=np.float64)
    right = np.array([s.correct for s in samples], dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, bins - 1)  # 1.0 falls in the last bin
    out, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            c, a = float(conf[mask].mean()), float(right[mask].mean())
            ece += count * abs(a - c)
        else:
            c = a = None
        out.append(Bin(float(edges[b]), float(edges[b + 1]), count, c, a))
    n = len(samples)
    return Calibration(out, n, float(right.mean()) if n else 0.0, float(conf.mean()) if n else 0.0, ece / n if n else 0.0)


def plot_calibration(cal: Calibration, title: str) -> bytes:
    """Reliability diagram (accuracy per confidence bin, with counts) over a histogram of counts."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = cal.bins[0].high - cal.bins[0].low
    centres = [b.low + width / 2 for b in cal.bins]
    filled = [(c, b) for c, b in zip(centres, cal.bins) if b.count]
    top.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="perfect calibration")
    top.bar([c for c, _ in filled], [b.accuracy for _, b in filled], width=width * 0.95, color="#3182bd",
            edgecolor="black", linewidth=0.5, label="accuracy in bin")
    top.bar([c for c, _ in filled], [b.confidence - b.accuracy for _, b in filled], bottom=[b.accuracy for _, b in filled],
            width=width * 0.95, color="#fc9272", alpha=0.6, edgecolor="none", label="gap to mean confidence")
    for c, b in filled:
        top.annotate(f"n={b.count}", (c, max(b.accuracy, b.confidence)), textcoords="offset points", xytext=(0, 3),
                     ha="center", fontsize=7)
    top.set_ylim(0, 1.08)
    top.set_ylabel("accuracy")
    top.set_title(" ".join(title.split()).replace("$", r"\$") + f"\nECE {cal.ece:.3f} · mean confidence {cal.mean_confidence:.3f} · accuracy {cal.accuracy:.3f}", fontsize=9)
    top.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.bar(centres, [b.count for b in cal.bins], width=width * 0.95, color="#9ecae1", edgecolor="black", linewidth=0.5)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("probability of the chosen letter (softmax over A–D)")
    bottom.set_ylabel("questions")
    fig.tight_layout()
    return png_bytes(fig)
