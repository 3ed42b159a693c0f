"""The run folder's Markdown report and its PNG plots (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.run_folder import atomic_path, write_text  # noqa: E402


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    """history: Keras-style {"loss": [...], "val_loss": [...], "accuracy": [...], ...} per epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            if history.get(key):
                epochs = np.arange(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, ms=3, label="train" if key == metric else "validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def plot_confusion_matrix(cm, label_names, path: Path) -> None:
    cm = np.asarray(cm)
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title("confusion matrix (test)")
    save_figure(fig, path)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_training_report(path: Path, *, config: dict, metrics: dict, label_names, skipped=()) -> None:
    test = metrics["test"]
    per_class = [[name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
                 for name, m in test["per_class"].items()]
    cm = test["confusion_matrix"]
    confusions = sorted(
        ((cm[i][j], label_names[i], label_names[j]) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i][j]),
        reverse=True,
    )[:5]
    parts = [
        f"# Training report: {config['data']}",
        "",
        f"**Test accuracy {test['accuracy']:.2%}** on {test['examples']} images "
        f"({len(label_names)} classes), after {metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s.",
        "",
        "## Data",
        _table(["split", "images"], [[k, v] for k, v in metrics["split_sizes"].items()]),
        "",
        "## Model",
        f"CNN: {config['cnn']['filters']} filters (kernel {config['cnn']['kernel_size']}, "
        f"max-pool {config['cnn']['pool_size']}/stride {config['cnn']['pool_stride']}), "
        f"dense {config['cnn']['hidden_units']}, dropout {config['cnn']['dropout']}; "
        f"{metrics['parameters']:,} parameters; input {config['image_size']}x{config['image_size']} RGB, 0..255.",
        "",
        "## Training curves",
        "![training curves](plots/training_curves.png)",
        "",
        "## Test results",
        _table(["class", "precision", "recall", "F1", "images"], per_class),
        "",
        "![confusion matrix](plots/confusion_matrix.png)",
        "",
    ]
    if confusions:
        parts += ["Most frequent confusions (true → predicted):", ""]
        parts += [f"- {t} → {p}: {n}" for n, t, p in confusions]
        parts.append("")
    if skipped:
        parts += [f"## Skipped samples ({len(skipped)})", "", "These files were skipped because SKIP_BAD was set:", ""]
        parts += [f"- `{s.path}`: {s.problem}" for s in skipped[:200]]
        if len(skipped) > 200:
            parts.append(f"- … and {len(skipped) - 200} more")
        parts.append("")
    write_text(path, "\n".join(parts))
