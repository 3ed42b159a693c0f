"""What makes a trial good: constraints, the objective value, the best trial, Pareto fronts.

Pure functions over plain numbers, shared by the trials (which hand the
objective to Keras Tuner's oracle) and the report (which explains the choice),
so the two can never disagree.

Quality is what a trial is good at: validation accuracy for a classifier,
validation COCO mAP@[.5:.95] for a detector (``tuning.tunables``). Below, "accuracy"
means that number.

Objectives:
    accuracy  the quality alone.
    score     quality x (latency / T) ** -W, the MnasNet reward (Tan et al., 2019); T is
              MAX_LATENCY_MS when given, else 1 ms. T only scales the numbers: the ranking
              depends on W alone. With W = 0.07 a model twice as fast is worth ~5% more
              accuracy (2 ** 0.07 = 1.05).

Constraints (MAX_SIZE_KB on the int8 .tflite, MAX_LATENCY_MS on its median latency)
make a trial infeasible. An infeasible trial's objective is minus its relative
overshoot: below every feasible trial (feasible values are >= 0), yet still
telling the oracle which infeasible trials came close.
"""
from __future__ import annotations

from dataclasses import dataclass, field

OBJECTIVES = ("accuracy", "score")
DEFAULT_LATENCY_WEIGHT = 0.07


@dataclass(frozen=True)
class Quality:
    """The number that ranks trials, and how to name and print it.

    metric:   its key in a trial's metrics (trial.json, trials.csv).
    label:    in sentences and plot axes.
    short:    a table column.
    percent:  print as a percentage (accuracy) or with 3 decimals (mAP).
    test_key: the retrained model's figure, metrics.json["test"][test_key].
    """

    metric: str
    label: str
    short: str
    percent: bool
    test_key: str
    test_label: str

    def format(self, value: float) -> str:
        return f"{value:.2%}" if self.percent else f"{value:.3f}"


ACCURACY = Quality("val_accuracy", "validation accuracy", "val acc", True, "accuracy", "test accuracy")
MAP = Quality("val_map", "validation mAP@[.5:.95]", "val mAP", False, "map", "test mAP@[.5:.95]")
QUALITIES = (ACCURACY, MAP)  # each task's, in tuning.tunables


@dataclass(frozen=True)
class Constraints:
    max_size_kb: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self):
        for name in ("max_size_kb", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name.upper()}={value}: must be positive")

    def violations(self, size_bytes: float, latency_ms: float) -> dict[str, float]:
        """{constraint: relative overshoot > 0} for each constraint the trial breaks."""
        out = {}
        if self.max_size_kb is not None and size_bytes / 1024 > self.max_size_kb:
            out["max_size_kb"] = size_bytes / 1024 / self.max_size_kb - 1
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            out["max_latency_ms"] = latency_ms / self.max_latency_ms - 1
        return out

    def describe(self) -> str:
        parts = []
        if self.max_size_kb is not None:
            parts.append(f"int8 model <= {self.max_size_kb:g} KB")
        if self.max_latency_ms is not None:
            parts.append(f"median latency <= {self.max_latency_ms:g} ms")
        return " and ".join(parts) or "none"


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: str = "accuracy"
    latency_weight: float = DEFAULT_LATENCY_WEIGHT
    constraints: Constraints = field(default_factory=Constraints)
    quality: Quality = ACCURACY

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise ValueError(f"OBJECTIVE={self.kind}: expected one of {', '.join(OBJECTIVES)}")
        if self.latency_weight < 0:
            raise ValueError(f"LATENCY_WEIGHT={self.latency_weight}: must be >= 0")

    @property
    def reference_latency_ms(self) -> float:
        return self.constraints.max_latency_ms or 1.0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "latency_weight": self.latency_weight,
                "max_size_kb": self.constraints.max_size_kb, "max_latency_ms": self.constraints.max_latency_ms,
                "quality": self.quality.metric}

    @classmethod
    def from_dict(cls, d: dict) -> "ObjectiveConfig":
        quality = {q.metric: q for q in QUALITIES}[d.get("quality", ACCURACY.metric)]
        return cls(kind=d["kind"], latency_weight=d["latency_weight"],
                   constraints=Constraints(d.get("max_size_kb"), d.get("max_latency_ms")), quality=quality)

    def describe(self) -> str:
        if self.kind == "accuracy":
            return self.quality.label
        return (f"score = {self.quality.label} x (latency / {self.reference_latency_ms:g} ms) ^ "
                f"-{self.latency_weight:g}")


def score(quality: float, latency_ms: float, weight: float, reference_ms: float) -> float:
    """MnasNet reward: quality x (latency / reference) ** -weight."""
    return quality * (max(latency_ms, 1e-6) / reference_ms) ** -weight


def objective_value(cfg: ObjectiveConfig, quality: float, size_bytes: float, latency_ms: float) -> float:
    """The number the oracle maximises: >= 0 when feasible, minus the total overshoot when not."""
    broken = cfg.constraints.violations(size_bytes, latency_ms)
    if broken:
        return -sum(broken.values())
    if cfg.kind == "accuracy":
        return quality
    return score(quality, latency_ms, cfg.latency_weight, cfg.reference_latency_ms)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report sees it. Measurements are None for a trial that did not finish.

    quality: the trial's validation accuracy or mAP (ObjectiveConfig.quality says which).
    steps: optimizer steps the configuration trained (tuning.fidelity); message: why a trial failed.
    """

    trial_id: str
    status: str
    hyperparameters: dict
    quality: float | None = None
    params: int | None = None
    int8_bytes: int | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    wall_seconds: float | None = None
    objective: float | None = None
    steps: int | None = None
    message: str | None = None

    @property
    def measured(self) -> bool:
        return self.status == "COMPLETED" and None not in (self.quality, self.int8_bytes, self.latency_ms)


def top_rung(records: list[TrialRecord], top_steps: int) -> list[TrialRecord]:
    """The trials trained as long as `make train` trains: the only ones that compete to be shipped
    (a lower rung's score ranks configurations for promotion, not models)."""
    return [r for r in records if r.steps is not None and r.steps >= top_steps]


def contenders(records: list[TrialRecord], cfg: ObjectiveConfig, top_steps: int) -> list[TrialRecord]:
    """The trials that compete to be shipped: the top rung's. When none of them meets the constraints
    (the few configurations promoted that far were too slow or too big), the highest rung that has a
    trial that does: its best is then retrained with the full budget, as any winner is."""
    top = top_rung(records, top_steps)
    if any(feasible(r, cfg.constraints) for r in top):
        return top
    for steps in sorted({r.steps for r in records if r.steps is not None and r.steps < top_steps}, reverse=True):
        rung = [r for r in records if r.steps == steps]
        if any(feasible(r, cfg.constraints) for r in rung):
            return rung
    return top


def default_record(records: list[TrialRecord], default_values: dict | None, top_steps: int) -> TrialRecord | None:
    """The default configuration's top-rung trial (trial 0 of a search that holds the default)."""
    if default_values is None:
        return None
    return next((r for r in top_rung(records, top_steps)
                 if all(r.hyperparameters.get(k) == v for k, v in default_values.items())), None)


def feasible(record: TrialRecord, constraints: Constraints) -> bool:
    return record.measured and not constraints.violations(record.int8_bytes, record.latency_ms)


def rank(records: list[TrialRecord], cfg: ObjectiveConfig) -> list[TrialRecord]:
    """Feasible, measured trials, best first; ties go to the faster, then the smaller model."""
    ok = [r for r in records if feasible(r, cfg.constraints)]
    key = lambda r: (-objective_value(cfg, r.quality, r.int8_bytes, r.latency_ms), r.latency_ms,  # noqa: E731
                     r.int8_bytes, r.trial_id)
    return sorted(ok, key=key)


def choose_best(records: list[TrialRecord], cfg: ObjectiveConfig) -> TrialRecord | None:
    """The trial to ship, or None when no finished trial meets the constraints."""
    ranked = rank(records, cfg)
    return ranked[0] if ranked else None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher accuracy (y).

    A point is dominated when another has cost <= and accuracy >= with at least
    one strict. Returned in order of increasing cost. Duplicated points are all kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        x, y = points[i]
        if y > best_y or (front and points[front[-1]] == (x, y)):
            front.append(i)
            best_y = max(best_y, y)
    return front


def explain_best(records: list[TrialRecord], cfg: ObjectiveConfig) -> str:
    """Plain-language reasons the best trial was chosen, for report.md."""
    measured = [r for r in records if r.measured]
    best = choose_best(records, cfg)
    c, q = cfg.constraints, cfg.quality
    if best is None:
        if not measured:
            return "No trial finished, so there is nothing to choose from."
        return (f"None of the {len(measured)} finished trials meets the constraints ({c.describe()}). "
                f"Loosen MAX_SIZE_KB / MAX_LATENCY_MS or narrow the space towards smaller models.")
    ranked = rank(records, cfg)
    value = "" if cfg.kind == "accuracy" else \
        f"{objective_value(cfg, best.quality, best.int8_bytes, best.latency_ms):.4f}; "
    lines = [f"Trial {best.trial_id} has the best {cfg.describe()} "
             f"({value}{q.label} {q.format(best.quality)}, {best.int8_bytes / 1024:.1f} KB int8, "
             f"{best.latency_ms:.3f} ms median) among the {len(ranked)} of {len(measured)} finished trials "
             f"that meet the constraints ({c.describe()})."]
    excluded = [r for r in measured if not feasible(r, c)]
    better_but_infeasible = [r for r in excluded if r.quality > best.quality]
    for r in sorted(better_but_infeasible, key=lambda r: -r.quality):
        broken = ", ".join(describe_violation(name, r, c) for name in c.violations(r.int8_bytes, r.latency_ms))
        lines.append(f"Trial {r.trial_id} was better ({q.format(r.quality)}) but is not shippable: {broken}.")
    if excluded and not better_but_infeasible:
        lines.append(f"{len(excluded)} trial(s) broke a constraint; none of them was better.")
    if len(ranked) > 1:
        runner = ranked[1]
        lines.append(f"Runner-up: trial {runner.trial_id} ({q.label} {q.format(runner.quality)}, "
                     f"{runner.int8_bytes / 1024:.1f} KB, {runner.latency_ms:.3f} ms).")
    if cfg.kind == "score":
        acc_best = max(ranked, key=lambda r: r.quality)
        if acc_best is not best:
            lines.append(f"Trial {acc_best.trial_id} was the best feasible trial by {q.label} "
                         f"({q.format(acc_best.quality)}) but slower ({acc_best.latency_ms:.3f} ms); the latency "
                         f"weight {cfg.latency_weight:g} prefers trial {best.trial_id}.")
    return " ".join(lines)


def describe_violation(name: str, r: TrialRecord, c: Constraints) -> str:
    if name == "max_size_kb":
        return f"{r.int8_bytes / 1024:.1f} KB > MAX_SIZE_KB={c.max_size_kb:g}"
    return f"{r.latency_ms:.3f} ms > MAX_LATENCY_MS={c.max_latency_ms:g}"
