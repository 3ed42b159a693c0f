"""The run folder's Markdown reports and their PNG plots (matplotlib, no display needed), for both
tasks: training curves, confusion matrix, detections drawn on images, the training reports."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patches  # noqa: E402

from common.run_folder import atomic_path, write_text  # noqa: E402
from pipeline.sources.splits import MIN_HELD_OUT, small_held_out  # noqa: E402

DISPLAY_THRESHOLD = 0.4  # score below which a detection is not shown or listed


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


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def recipe_section(metrics: dict) -> list[str]:
    """The report's account of how the run was set up: its step budget, what was chosen from the data
    and why, what INIT= loaded, and a warning when the validation split is too small to decide much."""
    budget = metrics.get("budget")
    if not budget:
        return []
    parts = ["## How this run was set up", "",
             f"- Budget: {budget['steps']} steps ({budget['epochs']} epochs of {budget['steps_per_epoch']}), "
             f"{budget['reason']}"
             + (f"; estimated {budget['steps'] * budget['est_step_seconds'] / 60:.1f} min"
                if budget.get("est_step_seconds") else "")
             + f". Ran {metrics['steps']} steps in {metrics['train_seconds'] / 60:.1f} min"
             + (" (stopped early)." if metrics["steps"] < budget["steps"] else ".")]
    validation = metrics["split_sizes"].get("validation", 0)
    if small_held_out(validation):
        parts.append(f"- **Small validation split: {validation} images** (fewer than {MIN_HELD_OUT}). Early stopping "
                     f"and the best-epoch choice rest on few images; add data or a validation folder.")
    init = metrics.get("init")
    if init:
        parts.append(f"- INIT={init['from']}: loaded {len(init['loaded'])} layers; "
                     f"{len(init['not_loaded'])} kept their initial weights"
                     + (": " + ", ".join(f"{x['layer']} ({x['why']})" for x in init["not_loaded"][:12])
                        if init["not_loaded"] else "") + ".")
    parts.append("")
    if metrics.get("recipe"):
        parts += ["Chosen from the data (explicit variables win):", "",
                  table(["setting", "value", "why"], [[c["setting"], c["value"], c["why"]] for c in metrics["recipe"]]),
                  ""]
    return parts


def skipped_section(skipped) -> list[str]:
    if not skipped:
        return []
    parts = [f"## Skipped samples ({len(skipped)})", "", "These files were skipped because SKIP_BAD was set:", ""]
    parts += [f"- `{s.path}`: {s.problem}" for s in skipped[:200]]
    if len(skipped) > 200:
        parts.append(f"- … and {len(skipped) - 200} more")
    parts.append("")
    return parts


def _classifier_model_line(config: dict, parameters: int) -> str:
    size = config["image_size"]
    if config.get("model") == "mobilenetv2":
        m = config["mobilenet"]
        return (f"MobileNetV2 alpha {m['alpha']} (start: weights {m['weights']}), head trained first, then the top "
                f"{m['fine_tune_blocks']} blocks; {parameters:,} parameters; input {size}x{size} RGB, 0..255.")
    c = config["cnn"]
    return (f"CNN: {c['filters']} filters (kernel {c['kernel_size']}, max-pool {c['pool_size']}/stride "
            f"{c['pool_stride']}), dense {c['hidden_units']}, dropout {c['dropout']}; {parameters:,} parameters; "
            f"input {size}x{size} RGB, 0..255.")


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
        table(["split", "images"], [[k, v] for k, v in metrics["split_sizes"].items()]),
        "",
        *recipe_section(metrics),
        "## Model",
        _classifier_model_line(config, metrics["parameters"]),
        "",
        "## Training curves",
        "![training curves](plots/training_curves.png)",
        "",
        "## Test results",
        table(["class", "precision", "recall", "F1", "images"], per_class),
        "",
        "![confusion matrix](plots/confusion_matrix.png)",
        "",
    ]
    if confusions:
        parts += ["Most frequent confusions (true → predicted):", ""]
        parts += [f"- {t} → {p}: {n}" for n, t, p in confusions]
        parts.append("")
    parts += skipped_section(skipped)
    write_text(path, "\n".join(parts))


def draw_detections(image: np.ndarray, detections: dict, label_names, path: Path, *, truth: dict | None = None) -> None:
    """Write a PNG of ``image`` with predicted boxes (solid, labelled with score) and true boxes (dashed).

    detections: {"boxes" [K, 4], "classes" [K], "scores" [K]}; truth: {"boxes" [N, 4], "labels" [N]}.
    """
    h, w = image.shape[:2]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(4, 4 * h / w))
    ax.imshow(image)
    ax.set_axis_off()

    def rect(box, colour, style):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        ax.add_patch(patches.Rectangle((xmin * w - 0.5, ymin * h - 0.5), (xmax - xmin) * w, (ymax - ymin) * h,
                                       fill=False, edgecolor=colour, linewidth=1.6, linestyle=style))

    if truth is not None:
        for box, label in zip(truth["boxes"], truth["labels"]):
            rect(box, "white", "--")
    for box, cls, score in zip(detections["boxes"], detections["classes"], detections["scores"]):
        colour = colours(int(cls) % 10)
        rect(box, colour, "-")
        name = label_names[int(cls)] if 0 <= int(cls) < len(label_names) else str(int(cls))
        ax.text(float(box[1]) * w, float(box[0]) * h - 1, f"{name} {float(score):.2f}", color="white", fontsize=7,
                va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
    save_figure(fig, path)


def plot_loss_curves(history: dict[str, list[float]], path: Path) -> None:
    """Training and validation SSD loss per epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label, style in (("loss", "train", "-o"), ("val_loss", "validation", "-s")):
        if history.get(key):
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], style, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("SSD loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_detection_examples(root: Path, examples, preds: list[dict], label_names, count: int) -> list[str]:
    """PNGs (root/plots/example_NN.png) of the first ``count`` of ``examples`` (schema examples of the
    split that was scored) with predicted (solid, score >= DISPLAY_THRESHOLD) and true (dashed) boxes;
    ``preds`` are the evaluation's predictions, in the split's order. Returns their names under root."""
    names = []
    for i, ex in enumerate(examples.take(min(count, len(preds)))):
        keep = preds[i]["scores"] >= DISPLAY_THRESHOLD
        shown = {k: v[keep] for k, v in preds[i].items()}
        truth = {"boxes": ex["boxes"].numpy(), "labels": ex["labels"].numpy()}
        name = f"plots/example_{i:02d}.png"
        draw_detections(ex["image"].numpy(), shown, label_names, root / name, truth=truth)
        names.append(name)
    return names


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


SMALL_OBJECTS_GAP = 0.15  # small objects' AP@.5 this far below the large ones' is called out in the report


def size_section(by_size: dict | None, input_side: int) -> list[str]:
    """The report's lines on AP by object size (``coco_metrics``' "by_size"), with a hint when
    the small objects lag; none for metrics without it."""
    if not by_size:
        return []
    bounds = {"small": "under {hi} px", "medium": "{lo}-{hi} px", "large": "{lo} px and more"}
    rows, lo = [], 0
    for name, m in by_size.items():
        hi = m["max_px"]
        found = "–" if m["recall50"] is None else f"{m['recall50']:.0%}"
        rows.append([f"{name} ({bounds[name].format(lo=lo, hi=hi)})", m["objects"], _fmt(m["ap"]), _fmt(m["ap50"]),
                     found])
        lo = hi
    lines = [f"## Test results by object size (the object's side at the {input_side} px input)",
             table(["size", "objects", "AP@[.5:.95]", "AP@.5", "found at IoU .5"], rows), ""]
    small, large = by_size["small"]["ap50"], by_size["large"]["ap50"]
    if small is not None and large is not None and small < large - SMALL_OBJECTS_GAP:
        lines += [f"Small objects are the weak spot (AP@.5 {small:.2f} against {large:.2f} for large ones): a "
                  f"larger IMAGE_SIZE= gives them more pixels, and a longer TIME_BUDGET= keeps the training steps.",
                  ""]
    return lines


def write_detection_report(path: Path, *, config: dict, metrics: dict, examples: list[str], skipped=()) -> None:
    test = metrics["test"]
    ssd = config["ssd"]
    a = ssd["anchors"]
    per_class = [[name, _fmt(m["ap"]), _fmt(m["ap50"]), m["objects"]] for name, m in test["per_class"].items()]
    parts = [
        f"# Detection training report: {config['data']}",
        "",
        f"**Test mAP@.5 {test['map50']:.3f}, mAP@[.5:.95] {test['map']:.3f}** (COCO, pycocotools) on "
        f"{test['images']} images with {test['objects']} objects ({metrics['test_split']} split), after "
        f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s. mAP@.75 {test['map75']:.3f}.",
        "",
        "## Data",
        table(["split", "images"], [[k, v] for k, v in metrics["split_sizes"].items()]),
        "",
        *recipe_section(metrics),
        "## Model",
        f"SSD ({ssd['head']} heads) on MobileNetV2 alpha {ssd['alpha']}, input {a['input_size']}x{a['input_size']} "
        f"RGB 0..255; feature strides {a['strides']}, anchor scales {a['min_scale']}..{a['max_scale']}, "
        f"aspect ratios {a['aspect_ratios']}; {metrics['parameters']:,} parameters.",
        "",
        "## Training curves",
        "![training curves](plots/training_curves.png)",
        "",
        "## Test results (AP per class)",
        table(["class", "AP@[.5:.95]", "AP@.5", "objects"], per_class),
        "",
        *size_section(test.get("by_size"), a["input_size"]),
        "## Examples (solid: predicted, dashed: true)",
        "",
        *[f"![example]({name})" for name in examples],
        "",
    ]
    parts += skipped_section(skipped)
    write_text(path, "\n".join(parts))
