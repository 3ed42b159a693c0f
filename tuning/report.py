"""The tuning report in RUN/tuning: report.md, trials.csv, best_hyperparameters.json, plots, HParams logs.

Everything is computed from the trial store (``search.load_records``) and the
pure functions in ``tuning.objective``, so rerunning the report after a resume,
or on the chief of a distributed search, gives the same answer.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp_api

from common.run_folder import write_json, write_text
from export.runtime import cpu_description
from pipeline.evaluation.report import plt, save_figure
from tuning.objective import (ACCURACY, ObjectiveConfig, Quality, TrialRecord, choose_best, contenders, explain_best,
                              feasible, objective_value, pareto_front)
from tuning.objective import describe_violation
from tuning.tunables import describe_seeds


@dataclass(frozen=True)
class Comparison:
    """The default model (trial 0) and the shipped one, side by side: the report's opening.

    default_test: the default's test figure (trial 0's weights; the retrained model's when the default
    won); None when it could not be measured. best_test: the retrained shipped model's."""

    default: TrialRecord
    best: TrialRecord
    default_test: float | None
    best_test: float

    @property
    def default_wins(self) -> bool:
        return self.best is self.default

    def headline(self, cfg: ObjectiveConfig) -> str:
        """The report's first line: who won, and never a model worse than the default unsaid."""
        q = cfg.quality
        if self.default_wins:
            return (f"**The default wins.** No trial beat `make train`'s model on {cfg.describe()} "
                    f"within the constraints ({cfg.constraints.describe()}); the default is what was retrained "
                    f"and ships.")
        worse = self.default_test is not None and self.best_test < self.default_test
        if not feasible(self.default, cfg.constraints):
            broken = ", ".join(describe_violation(name, self.default, cfg.constraints)
                               for name in cfg.constraints.violations(self.default.int8_bytes,
                                                                      self.default.latency_ms))
            tests = "" if self.default_test is None else (
                f": {q.test_label} {q.format(self.best_test)} vs the default's {q.format(self.default_test)}"
                + (f", **{100 * (self.default_test - self.best_test):.2f} points worse than the default**"
                   if worse and q.percent else ", **worse than the default**" if worse else ""))
            return (f"**The default breaks the constraints** ({broken}); trial {self.best.trial_id} is the best "
                    f"model that meets them{tests}.")
        if worse:
            return (f"**Warning: the shipped model is worse than the default on the test split** "
                    f"({q.format(self.best_test)} vs {q.format(self.default_test)}). Trial {self.best.trial_id} "
                    f"beat the default on {q.label}, which did not carry over to the test split; "
                    "`make train` gives the better model.")
        return (f"**Trial {self.best.trial_id} beats the default** ({q.label} {q.format(self.best.quality)} vs "
                f"{q.format(self.default.quality)}" + (f"; test {q.format(self.best_test)} vs "
                                                      f"{q.format(self.default_test)}" if self.default_test
                                                      is not None else "") + ").")

    def table(self, cfg: ObjectiveConfig) -> str:
        q = cfg.quality

        def row(label, fmt):
            return [label, fmt(self.default), fmt(self.best)]

        tests = {id(self.default): self.default_test, id(self.best): self.best_test}
        rows = [
            row("trial", lambda r: r.trial_id),
            row(q.label, lambda r: q.format(r.quality)),
            row(q.test_label, lambda r: "-" if tests[id(r)] is None else q.format(tests[id(r)])),
            row("int8 size", lambda r: f"{r.int8_bytes / 1024:.1f} KB"),
            row("int8 latency (median, p90)", lambda r: f"{r.latency_ms:.3f} ms ({r.latency_p90_ms:.3f})"),
            row("parameters", lambda r: f"{r.params:,}"),
            row("meets the constraints", lambda r: "yes" if feasible(r, cfg.constraints) else "no"),
        ]
        return _table(["", "default (`make train`)", "shipped"], rows)


def metric_columns(quality: Quality = ACCURACY) -> tuple[str, ...]:
    """trials.csv's measurement columns; the quality column is val_accuracy or val_map."""
    return ("trial_id", "status", "steps", "feasible", "objective", quality.metric, "params", "int8_bytes",
            "latency_ms", "latency_p90_ms", "wall_seconds")


def plot_names(quality: Quality = ACCURACY) -> tuple[str, ...]:
    name = quality.metric.removeprefix("val_")
    return ("objective_over_trials.png", f"{name}_vs_latency.png", f"{name}_vs_size.png",
            "hyperparameter_effects.png")


def _ordered(values) -> list:
    """Hyperparameter values in a stable order: numbers by size, names (head, anchor ratios) as text."""
    return sorted(values, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def _value_label(v) -> str:
    return v if isinstance(v, str) else f"{v:g}"


def hyperparameter_names(records: list[TrialRecord], space) -> list[str]:
    """Hyperparameter columns: the space's, in declaration order, then any other a trial has (epochs)."""
    names = list(space.hyperparameters())
    for r in records:
        names += [k for k in r.hyperparameters if k not in names]
    return names


def _objective(cfg: ObjectiveConfig, r: TrialRecord) -> float | None:
    return objective_value(cfg, r.quality, r.int8_bytes, r.latency_ms) if r.measured else None


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def trials_csv(records: list[TrialRecord], cfg: ObjectiveConfig, space) -> str:
    """One row per trial; a hyperparameter a trial does not use (an absent block) is left empty; the last
    column says why a trial failed."""
    hps = hyperparameter_names(records, space)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(metric_columns(cfg.quality)) + hps + ["message"])
    for r in records:
        row = [r.trial_id, r.status, r.steps, int(feasible(r, cfg.constraints)) if r.measured else "",
               _objective(cfg, r), r.quality, r.params, r.int8_bytes, r.latency_ms, r.latency_p90_ms, r.wall_seconds]
        writer.writerow([_fmt(v) for v in row] + [_fmt(r.hyperparameters.get(k)) for k in hps] + [_fmt(r.message)])
    return out.getvalue()


def best_summary(records: list[TrialRecord], tune_cfg, final: dict | None,
                 comparison: Comparison | None = None) -> dict:
    """best_hyperparameters.json: the trial to ship, its model config, its measurements, and why.
    Only top-rung trials compete (tuning.fidelity)."""
    cfg = tune_cfg.objective
    competing = contenders(records, cfg, tune_cfg.fidelity.full_steps)
    best = choose_best(competing, cfg)
    why = explain_best(competing, cfg)
    if best is not None and best.steps is not None and best.steps < tune_cfg.fidelity.full_steps:
        why += (f" No trial at the top rung ({tune_cfg.fidelity.full_steps:,} steps) meets the constraints, so it was "
                f"chosen among the {best.steps:,}-step trials and retrained with the full budget.")
    summary = {"objective": cfg.describe(), "constraints": cfg.constraints.describe(),
               "why": why, "trial_id": None}
    if best is None:
        return summary
    train_cfg = tune_cfg.train_config(best.hyperparameters)
    q = cfg.quality
    search = tune_cfg.search
    summary.update({
        "trial_id": best.trial_id,
        "hyperparameters": best.hyperparameters,
        **search.model_summary(train_cfg),
        "learning_rate": train_cfg.learning_rate,
        q.metric: best.quality,
        "params": best.params,
        "int8_bytes": best.int8_bytes,
        "latency_ms": best.latency_ms,
        "latency_p90_ms": best.latency_p90_ms,
        "objective_value": _objective(cfg, best),
        "steps": best.steps,
        "retrained": None if final is None else {"steps": final.get("steps"), **search.retrained_summary(final)},
    })
    if comparison is not None:
        summary["default"] = {"trial_id": comparison.default.trial_id, "default_wins": comparison.default_wins,
                              q.metric: comparison.default.quality, "test": comparison.default_test,
                              "int8_bytes": comparison.default.int8_bytes,
                              "latency_ms": comparison.default.latency_ms, "params": comparison.default.params}
    return summary


# --- plots -------------------------------------------------------------------------------------------

def _plots(records: list[TrialRecord], cfg: ObjectiveConfig, space, plots: Path, top_steps: int) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    q = cfg.quality
    names = plot_names(q)
    measured = [r for r in records if r.measured]
    best = choose_best(contenders(records, cfg, top_steps), cfg)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = [i for i, r in enumerate(records) if r.measured]
    ys = [_objective(cfg, r) for r in records if r.measured]
    ax.scatter(xs, ys, c=["tab:blue" if feasible(r, cfg.constraints) else "tab:red" for r in measured], zorder=3)
    running, best_so_far = [], float("-inf")
    for y in ys:
        best_so_far = max(best_so_far, y)
        running.append(best_so_far)
    ax.step(xs, running, where="post", color="gray", label="best so far")
    ax.set_xticks(range(len(records)), [r.trial_id for r in records], rotation=90, fontsize=7)
    ax.set_xlabel("trial (red: breaks a constraint)")
    ax.set_ylabel(cfg.kind)
    ax.set_title(f"objective over trials: {cfg.describe()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, plots / names[0])

    for name, cost, label, limit in (
        (names[1], lambda r: r.latency_ms, "median int8 latency (ms, 1 thread)", cfg.constraints.max_latency_ms),
        (names[2], lambda r: r.int8_bytes / 1024, "int8 .tflite size (KB)", cfg.constraints.max_size_kb),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        points = [(cost(r), r.quality) for r in measured]
        front = pareto_front(points)
        ok = [feasible(r, cfg.constraints) for r in measured]
        ax.scatter([p[0] for p, f in zip(points, ok) if f], [p[1] for p, f in zip(points, ok) if f],
                   c="tab:blue", label="meets constraints", zorder=3)
        ax.scatter([p[0] for p, f in zip(points, ok) if not f], [p[1] for p, f in zip(points, ok) if not f],
                   c="tab:red", marker="x", label="breaks a constraint", zorder=3)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="tab:green",
                label="Pareto front", zorder=2)
        for r, p in zip(measured, points):
            ax.annotate(r.trial_id, p, fontsize=7, xytext=(3, 3), textcoords="offset points")
        if best is not None:
            ax.scatter([cost(best)], [best.quality], s=220, marker="*", c="gold", edgecolors="black",
                       label=f"best (trial {best.trial_id})", zorder=4)
        if limit is not None:
            ax.axvline(limit, color="tab:red", alpha=0.5, label="limit")
        ax.set_xlabel(label)
        ax.set_ylabel(q.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, plots / name)

    hps = hyperparameter_names(measured, space)
    domains = space.hyperparameters()
    cols = 3
    rows = max(1, -(-len(hps) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, hps):
        used = [r for r in measured if name in r.hyperparameters]
        values = _ordered(set(domains.get(name, ())) | {r.hyperparameters[name] for r in used})
        ax.scatter([values.index(r.hyperparameters[name]) for r in used], [r.quality for r in used],
                   c=["tab:blue" if feasible(r, cfg.constraints) else "tab:red" for r in used], s=18)
        ax.set_xticks(range(len(values)), [_value_label(v) for v in values], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(hps):]:
        ax.axis("off")
    fig.supylabel(q.label)
    fig.tight_layout()
    save_figure(fig, plots / names[3])


def write_hparams_logs(records: list[TrialRecord], cfg: ObjectiveConfig, space, logdir: Path) -> None:
    """TensorBoard HParams: one run per finished trial, with its hardware measurements as metrics.

    Written into a fresh folder and swapped in, so TensorBoard never sees a half-written set.
    """
    measured = [r for r in records if r.measured]
    domains = space.hyperparameters()
    hparams = {}
    for name in hyperparameter_names(measured, space):
        seen = {r.hyperparameters[name] for r in measured if name in r.hyperparameters}
        hparams[name] = hp_api.HParam(name, hp_api.Discrete(_ordered(set(domains.get(name, ())) | seen)))
    metrics = {cfg.quality.metric: cfg.quality.label, "latency_ms": "median int8 latency (ms)",
               "int8_kb": "int8 size (KB)", "params": "parameters", "objective": cfg.describe(),
               "feasible": "meets the constraints (1) or not (0)"}
    logdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tensorboard.", dir=logdir.parent))
    try:
        with tf.summary.create_file_writer(str(tmp)).as_default():
            hp_api.hparams_config(hparams=list(hparams.values()),
                                  metrics=[hp_api.Metric(k, display_name=v) for k, v in metrics.items()])
        for r in measured:
            with tf.summary.create_file_writer(str(tmp / f"trial_{r.trial_id}")).as_default():
                hp_api.hparams({hparams[k]: v for k, v in r.hyperparameters.items() if k in hparams},
                               trial_id=r.trial_id)
                values = {cfg.quality.metric: r.quality, "latency_ms": r.latency_ms,
                          "int8_kb": r.int8_bytes / 1024, "params": r.params, "objective": _objective(cfg, r),
                          "feasible": float(feasible(r, cfg.constraints))}
                for k, v in values.items():
                    tf.summary.scalar(k, float(v), step=0)
        old = logdir.with_name(logdir.name + ".old")
        if logdir.exists():
            os.replace(logdir, old)
        os.replace(tmp, logdir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- report.md ---------------------------------------------------------------------------------------

def _input_sizes(tune_cfg) -> str:
    """How the trials' input side was chosen, in words."""
    space = tune_cfg.space.to_dict()
    if "input_size" in space:
        return "input size searched"
    scales = [s for s in space.get("input_scale", [1.0]) if s != 1.0]
    if not scales:
        return f"{tune_cfg.image_size}px"
    return (f"{tune_cfg.image_size}px (`make train`'s) or " + ", ".join(f"{s:g}" for s in scales)
            + " of it (input_scale)")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(records, tune_cfg, summary: dict, source, final: dict | None, folder,
              comparison: Comparison | None) -> str:
    cfg = tune_cfg.objective
    q = cfg.quality
    measured = [r for r in records if r.measured]
    hps = hyperparameter_names(records, tune_cfg.space)
    best_id = summary["trial_id"]
    run_root = folder.root.parent
    parts = [f"# Tuning report: {tune_cfg.data}", ""]
    if comparison is not None:
        parts += [comparison.headline(cfg), "", comparison.table(cfg), ""]
    elif final is not None:
        parts += ["The default configuration is not in the searched space (SPACE= / SPACE_SET=), so this "
                  "search cannot say whether it beats `make train`.", ""]
    if best_id is None:
        parts += ["**No model to ship.** " + summary["why"], ""]
    else:
        parts += [f"**Ship trial {best_id}.** " + summary["why"], ""]
        if final is not None:
            steps = summary["retrained"].get("steps")
            parts += ["Retrained on the full train split" + (f" for {steps:,} steps" if steps else "")
                      + f" with `make train`'s recipe into `{run_root}`: "
                      f"**{q.test_label} {q.format(final['test'][q.test_key])}** "
                      f"(`make export RUN={run_root}` next).", ""]
        else:
            parts += [f"Retraining into `{run_root}` has not finished yet; rerun the same command.", ""]
        parts += ["Best hyperparameters (also in `best_hyperparameters.json`):", "",
                  _table(["hyperparameter", "value"], [[k, _fmt(v)] for k, v in summary["hyperparameters"].items()]),
                  ""]

    done = sum(r.status == "COMPLETED" for r in records)
    train_images = source.split_sizes.get("train", 0)
    trial_images = min(tune_cfg.trial_train_examples or train_images, train_images)
    parts += [
        "## How the search ran", "",
        _table(["setting", "value"], [
            ["data", f"{tune_cfg.data} ({', '.join(f'{k} {v}' for k, v in source.split_sizes.items())} images)"],
            ["tuner", f"{tune_cfg.tuner} (Keras Tuner), seed {tune_cfg.seed}"],
            ["trials", f"{len(records)} run, {done} completed, budget {tune_cfg.trials}; {describe_seeds(tune_cfg)}; "
                       f"{tune_cfg.trials_per_process} per process"],
            ["per trial", f"{tune_cfg.fidelity.describe(tune_cfg.tuner)} on {trial_images} train images "
                          f"(only top-rung trials, {tune_cfg.fidelity.full_steps:,} steps, can be shipped), "
                          + _input_sizes(tune_cfg)
                          + f", batch {tune_cfg.batch_size}{tune_cfg.search.per_trial}"],
            ["objective", cfg.describe()],
            ["constraints", cfg.constraints.describe()],
            ["measurement", "int8 .tflite as `make export` writes it" + tune_cfg.search.measurement
                            + f"; median of {tune_cfg.latency_runs} runs after 5 warm-up runs, 1 thread, "
                            f"ai-edge-litert, on {cpu_description()}"],
        ]),
        "",
        f"A trial's {q.label} (float model) ranks configurations; the retrained model's {q.test_label} is "
        "the number to quote. Latency was measured on a CPU that other work may share, so compare trials "
        "to each other rather than to a phone; int8 speed depends on the CPU's int8 dot-product "
        "instructions (VNNI on x86, dotprod on ARM), which most phones have.",
        "",
        f"## Search space (as searched: {tune_cfg.space.num_configurations():,} configurations)", "",
        _table(["hyperparameter", "kind", "values"], [list(row) for row in tune_cfg.space.describe()]),
        "",
        "## Trials", "",
        _table(["trial", "status", "steps", "feasible", cfg.kind, q.short, "params", "int8 KB", "latency ms (p90)",
                "wall s"] + hps,
               [[f"**{r.trial_id}**" if r.trial_id == best_id else r.trial_id,
                 r.status + (f": {r.message}" if r.message and r.status != "COMPLETED" else ""),
                 f"{r.steps:,}" if r.steps is not None else "-",
                 ("yes" if feasible(r, cfg.constraints) else "no") if r.measured else "-",
                 f"{_objective(cfg, r):.4f}" if r.measured else "-",
                 q.format(r.quality) if r.quality is not None else "-",
                 f"{r.params:,}" if r.params is not None else "-",
                 f"{r.int8_bytes / 1024:.1f}" if r.int8_bytes is not None else "-",
                 f"{r.latency_ms:.3f} ({r.latency_p90_ms:.3f})" if r.latency_ms is not None else "-",
                 f"{r.wall_seconds:.0f}" if r.wall_seconds is not None else "-"]
                + [_fmt(r.hyperparameters.get(k)) or "-" for k in hps] for r in records]),
        "",
        "A `-` hyperparameter is not used by that model (fewer blocks or dense layers).",
        "",
        "## Pareto fronts", "",
        f"Trials no other trial beats on both {q.label} and cost (any constraint ignored):", "",
    ]
    for label, cost in ((f"{q.short} vs latency", lambda r: r.latency_ms),
                        (f"{q.short} vs size", lambda r: r.int8_bytes)):
        front = pareto_front([(cost(r), r.quality) for r in measured])
        parts.append(f"- {label}: " + (", ".join(
            f"{measured[i].trial_id} ({q.format(measured[i].quality)}, {measured[i].latency_ms:.3f} ms, "
            f"{measured[i].int8_bytes / 1024:.1f} KB)" for i in front) or "none"))
    parts += ["", "## Plots", ""]
    parts += [f"![{name[:-4]}](plots/{name})" for name in plot_names(q)]
    parts += ["", "Files: `trials.csv` (every trial), `best_hyperparameters.json`, "
              f"TensorBoard HParams: `tensorboard --logdir {folder.tensorboard}`.", ""]
    return "\n".join(parts)


def write_report(folder, tune_cfg, records: list[TrialRecord], *, source, final: dict | None,
                 comparison: Comparison | None = None) -> None:
    """Write every report file into ``folder`` (a search.TuningFolder)."""
    cfg = tune_cfg.objective
    summary = best_summary(records, tune_cfg, final, comparison)
    write_text(folder.trials_csv, trials_csv(records, cfg, tune_cfg.space))
    write_json(folder.best, summary)
    _plots(records, cfg, tune_cfg.space, folder.plots, tune_cfg.fidelity.full_steps)
    write_hparams_logs(records, cfg, tune_cfg.space, folder.tensorboard)
    write_text(folder.report, _markdown(records, tune_cfg, summary, source, final, folder, comparison))
