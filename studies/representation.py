"""Does bootstrapping help? AB vs its base method, ablations and a scaling curve, cell by cell.

Every cell is one ``agents/train_value.py`` run (a method, a variant, a budget, a seed) probed on
the fixed probe sets of its dataset (``agents.evaluate.probe_sets``); a dataset's baselines
(random-init twins, raw pixels) are one more cell, computed once. Finished cells are JSON files
under ``--out`` (committed: ``docs/results/representation/<scale>/``); a rerun skips them, so the
study resumes cell by cell across sessions. ``--report`` regenerates the tables and plots from
the files alone (and the study's section of ``docs/results.md``).

The base method runs at **equal views seen**: ``budget x views(AB step) / views(base step)``
steps, since an AB step also renders the bootstrap views. Groups (``--groups``):

- ``core``: SimCLR vs AB_SimCLR on ``fashion-scenes`` (the table the issue sizes at <= 60 min);
- ``default``: the same on the embedded default data (``scenes``);
- ``bases``: DINO vs AB_DINO, CLIP vs AB_CLIP (captions) on ``fashion-scenes``;
- ``decoupled``: base loss on ``fashion`` single items, bootstrapping on ``fashion-scenes``;
- ``ablations`` of AB_SimCLR on ``fashion-scenes``: no EMA target, no action tokens, no
  bootstrapping loss (the base method at equal *steps*), colour augmentation of the bootstrap
  views, gamma 0 and 0.9 (default 0.5), near and far crop pairs, bootstrap pairs from the base
  crops (the cheap variant), and the bootstrapping loss 4x and 10x heavier (does it move the
  features once it has a larger share of the encoder's gradient?);
- ``scaling``: the AB minus base gap at several budgets.

    python -m studies.representation --groups core        # the core table (~60 min)
    python -m studies.representation                      # everything (many hours)
    python -m studies.representation --quick              # every cell tiny (smoke)
    python -m studies.representation --scale cpu-v2 --groups core default   # the current
                                                          # default, bootstrap batch base/8
    python -m studies.representation --scale gpu          # larger cells, ViT-S/16
    python -m studies.representation --report             # tables from the files

(from the repository root). A difference's 95% interval uses Student's t quantile
(``scipy.stats.t.ppf``) at its exact degrees of freedom: Welch's fractional ones for two cells'
own seeds, ``n - 1`` for seeds paired by index (AB and its base at the same seeds: every
comparison of a full table), the pooled ones for a family of cells.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from studies._cells import (
    ROOT,
    code_version,
    load_cell,
    machine,
    run_train,
    save_cell,
    views_per_step,
)

PROBES = ("linear", "knn", "attentive")
FS = "fashion-scenes"

# base -> flags its cells add at the CNN scales: DINO's BatchNorm head (without it DINO collapses
# on the small CNN; the gpu scale's ViT keeps DINO's plain head)
CNN_BASE_FLAGS: dict[str, list[str]] = {"dino": ["--head-norm", "batch"]}

# scale -> the train_value flags of every cell (and by base: base_flags), the main budget (AB
# steps), the scaling budgets
SCALES: dict[str, dict] = {
    # cpu: the bootstrap batch the study's first cells ran with (16 images x 4 views), pinned so
    # that every cell stays comparable after cpu-small's default moved to 10 x 6 (issue 7)
    "cpu": {"flags": ["--n-views", "4", "--boot-images", "16"], "budget": 1200,
            "scaling": [300, 600, 1200, 2400], "half_batch": 32,
            "base_flags": CNN_BASE_FLAGS},
    "gpu": {"flags": ["gpu-vits16"], "budget": 20000,
            "scaling": [5000, 10000, 20000, 40000], "half_batch": 128},
    "quick": {"flags": ["--dataset-size", "64", "--base-batch", "16", "--boot-images", "2",
                        "--n-views", "2", "--warmup-steps", "2", "--log-every", "5",
                        "--probe-train", "48", "--probe-test", "32", "--probe-max-samples",
                        "96", "--value-batches", "1", "--decoder-depth", "1",
                        "--proj-hidden", "64", "--checkpoint-every", "1000"],
              "budget": 8, "scaling": [4, 8], "half_batch": 8,
              "base_flags": CNN_BASE_FLAGS},
}

# cpu-v2: the cpu scale on the project's current default (the mixture value head with box
# geometry, cpu-small's 6 views per bootstrap image) at the paper's bootstrap ratio, base/8 images
# (``--boot-images 0``: 8 of the 64); the value phase is left out (it leaves the encoder bit for
# bit as it is, so the probes would not change)
SCALES["cpu-v2"] = {**SCALES["cpu"], "flags": ["--boot-images", "0"]}

# variant -> (train_value flags, what it tests); "" is the method as defined
VARIANTS: dict[str, tuple[list[str], str]] = {
    "": ([], "the method as defined"),
    "no-ema": (["--ema-rate", "1"], "no EMA target (the target is the online network)"),
    "no-action-tokens": (["--no-action-tokens"], "the decoder sees no box tokens"),
    "no-boot-loss": (["--ab-weight", "0"], "no bootstrapping loss, at equal steps"),
    "boot-aug": (["--boot-color-jitter", "1"], "colour-jittered bootstrap views"),
    "gamma-0": (["--gamma", "0"], "gamma = 0: predict p(l | x_j), no bootstrapping in time"),
    "gamma-0.9": (["--gamma", "0.9"], "gamma = 0.9"),
    "near": (["--boot-scale", "0.3", "1.0"], "near crop pairs (30-100% of the image)"),
    "far": (["--boot-scale", "0.05", "0.3"], "far crop pairs (5-30% of the image)"),
    "weight-4": (["--ab-weight", "4"], "the bootstrapping loss 4x heavier (at weight 1 its "
                 "encoder gradient is about 0.1x the base loss's: studies/ab_gradients.py)"),
    "weight-10": (["--ab-weight", "10"], "the bootstrapping loss 10x heavier (its share of the "
                  "encoder's Adam step above the base loss's)"),
    "boot-base": (["--boot-source", "base", "--n-views", "2"],
                  "the cheap variant: the pairs are the 2 base crops of half the base images"),
}

METHODS = {"simclr": "SimCLR", "dino": "DINO", "clip": "CLIP"}


@dataclass(frozen=True)
class Cell:
    """One run: ``method`` is a base name (the base alone, at equal views) or ``ab_<base>``."""

    group: str
    dataset: str
    method: str
    variant: str = ""
    budget: int = 0
    seed: int = 1
    boot_dataset: str = ""
    probe_dataset: str = ""

    @property
    def ab(self) -> bool:
        return self.method.startswith("ab_")

    @property
    def base(self) -> str:
        return self.method.removeprefix("ab_")

    @property
    def cell_id(self) -> str:
        data = self.dataset + (f"+{self.boot_dataset}" if self.boot_dataset else "")
        var = f"+{self.variant}" if self.variant else ""
        return f"{data}__{self.method}{var}__{self.budget}__s{self.seed}"

    @property
    def label(self) -> str:
        name = ("AB_" if self.ab else "") + METHODS[self.base]
        return name + (f" {self.variant}" if self.variant else "")

    def flags(self, scale: str, steps: int) -> list[str]:
        f = [*SCALES[scale]["flags"], *SCALES[scale].get("base_flags", {}).get(self.base, []),
             "--dataset", self.dataset, "--base", self.base, "--seed", str(self.seed),
             "--total-steps", str(steps), "--no-probe-baselines"]
        if self.boot_dataset:
            f += ["--boot-dataset", self.boot_dataset]
        if self.probe_dataset:
            f += ["--probe-dataset", self.probe_dataset]
        if not self.ab:
            f += ["--ab-weight", "0"]
        if self.variant == "boot-base":  # half the base batch: pairs of its two crops
            f += ["--boot-images", str(SCALES[scale]["half_batch"])]
        return f + VARIANTS[self.variant][0]


@dataclass
class Plan:
    """The cells of the chosen groups, seeds and scale, and how to size them."""

    scale: str
    seeds: list[int]
    groups: list[str]
    cells: list[Cell] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg, cells = SCALES[self.scale], []
        b = cfg["budget"]

        def pair(group, dataset, base, budget=b, **kw):
            for s in self.seeds:
                cells.append(Cell(group, dataset, base, budget=budget, seed=s, **kw))
                cells.append(Cell(group, dataset, f"ab_{base}", budget=budget, seed=s, **kw))

        for g in self.groups:
            if g == "core":
                pair(g, FS, "simclr")
            elif g == "default":
                pair(g, "scenes", "simclr")
            elif g == "bases":
                pair(g, FS, "dino")
                pair(g, FS, "clip")
            elif g == "decoupled":
                pair(g, "fashion", "simclr", boot_dataset=FS, probe_dataset=FS)
            elif g == "ablations":
                for v in VARIANTS:
                    if v:
                        cells += [Cell(g, FS, "ab_simclr", v, b, s) for s in self.seeds]
            elif g == "scaling":
                for budget in cfg["scaling"]:
                    pair(g, FS, "simclr", budget=budget)
            else:
                raise SystemExit(f"unknown group {g!r}; valid: {GROUPS}")
        seen: set[str] = set()  # a cell shared by two groups (core at the main budget) runs once
        self.cells = [c for c in cells if not (c.cell_id in seen or seen.add(c.cell_id))]


GROUPS = ["core", "default", "bases", "decoupled", "ablations", "scaling"]


def steps_for(cell: Cell, scale: str, cache: dict) -> int:
    """Optimizer steps of a cell: its budget for AB runs (and the equal-steps ablation), the
    budget scaled to equal views seen for base runs."""
    if cell.ab:
        return cell.budget
    key = (cell.dataset, cell.boot_dataset, cell.base)
    if key not in cache:
        ab = Cell(cell.group, cell.dataset, f"ab_{cell.base}", boot_dataset=cell.boot_dataset)
        flags = ab.flags(scale, 1)
        cache[key] = (views_per_step(flags, True), views_per_step(flags + ["--ab-weight", "0"],
                                                                  False))
    ab_views, base_views = cache[key]
    return round(cell.budget * ab_views / base_views)


def run_cell(cell: Cell, out: Path, scale: str, threads: int, cache: dict,
             runner: Callable = run_train) -> dict:
    """Run one cell unless its file exists; returns its record."""
    done = load_cell(out, cell.cell_id)
    if done is not None:
        return done
    steps = steps_for(cell, scale, cache)
    flags = cell.flags(scale, steps)
    summary, wall, load = runner(flags, out, cell.cell_id, threads)
    record = {"cell": cell.__dict__, "id": cell.cell_id, "flags": flags, "steps": steps,
              "probes": summary["probes"].get("trained", {}),
              "value_accuracy_by_iou": summary["value_accuracy_by_iou"],
              "final": summary["final"], "wall_s": wall, "threads": threads, "load": load,
              "machine": machine(), "code": code_version()}
    save_cell(out, cell.cell_id, record)
    print(f"done {cell.cell_id}: " + ", ".join(
        f"{k} {record['probes'].get(k, float('nan')):.3f}" for k in PROBES)
        + f" ({wall:.0f} s, load {load})", flush=True)
    return record


def baseline_cell(dataset: str, out: Path, scale: str, threads: int) -> dict:
    """The fixed baselines of a dataset's probe sets: random-init twins and raw pixels."""
    cell_id = f"{dataset}__baselines"
    done = load_cell(out, cell_id)
    if done is not None:
        return done
    import time

    import torch

    from agents.evaluate import probe_report, probe_sets
    from agents.method.networks import make_encoder
    from agents.train_value import parse_args

    torch.set_num_threads(threads)
    args = parse_args([*SCALES[scale]["flags"], "--dataset", dataset])
    t0 = time.perf_counter()
    train, test = probe_sets(dataset, args.probe_train, args.probe_test, args.scene_size)
    rows = probe_report(make_encoder(args.encoder, args.view_size), train, test,
                        view_size=args.view_size, n_random=args.random_twins,
                        max_samples=args.probe_max_samples)
    rows.pop("trained")  # a random encoder: the twins are the row that counts
    record = {"id": cell_id, "dataset": dataset, "probes": rows,
              "wall_s": time.perf_counter() - t0, "machine": machine(), "code": code_version()}
    save_cell(out, cell_id, record)
    return record


# ---------------------------------------------------------------------------------------------
# statistics and the report
# ---------------------------------------------------------------------------------------------
def t95(df: float) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` degrees of freedom, which
    may be fractional (Welch's): ``scipy.stats.t.ppf(0.975, df)``."""
    if not df > 0:
        raise ValueError(f"t95: degrees of freedom must be > 0, got {df}")
    return float(stats.t.ppf(0.975, df))


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def pooled_sd(samples: Iterable[list[float]]) -> tuple[float, int]:
    """The seed-to-seed sd pooled over several cells (each cell's variance weighted by its
    ``n - 1``: the one-way ANOVA estimate, assuming the cells share one noise level) and its
    degrees of freedom (0: no cell has two seeds)."""
    ss, df = 0.0, 0
    for xs in samples:
        if len(xs) > 1:
            ss += statistics.variance(xs) * (len(xs) - 1)
            df += len(xs) - 1
    return (math.sqrt(ss / df) if df else 0.0), df


def difference(a: list[float], b: list[float], pooled: tuple[float, int] | None = None
               ) -> tuple[float, float, bool]:
    """``mean(a) - mean(b)``, its half-width at 95%, and whether it is outside the noise (the
    interval excludes 0). Welch's interval from the two cells' own seeds, at Welch's
    (fractional) degrees of freedom: the interval and the verdict of
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``; or, with ``pooled`` = ``(sd, df)``
    (:func:`pooled_sd` over a family of cells sharing one noise level), the t interval with
    that sd, which also covers a cell of one seed. Without either estimate (one seed per side,
    nothing pooled) the interval is infinite: never significant."""
    if pooled is not None and pooled[1] > 0:
        sd, df = pooled
        d = statistics.mean(a) - statistics.mean(b)
        half = t95(df) * sd * math.sqrt(1 / len(a) + 1 / len(b))
        return d, half, abs(d) > half
    if len(a) < 2 or len(b) < 2:
        return statistics.mean(a) - statistics.mean(b), math.inf, False
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    d = statistics.mean(a) - statistics.mean(b)
    if se == 0:
        return d, 0.0, d != 0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t95(df) * se
    return d, half, abs(d) > half


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float, bool]:
    """``mean(a - b)`` over seeds paired by index (the same seed: the same initial weights and
    data streams), its 95% half-width (Student's t, ``n - 1`` df: the interval and the verdict
    of ``scipy.stats.ttest_rel(a, b)``) and whether it is outside the noise. One pair: an
    infinite interval (never significant)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need equal, non-zero lengths (got {len(a)}, {len(b)})")
    d = [x - y for x, y in zip(a, b, strict=True)]
    if len(d) < 2:
        return d[0], math.inf, False
    half = t95(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return statistics.mean(d), half, abs(statistics.mean(d)) > half


def _fmt(xs: list[float]) -> str:
    m, sd = mean_sd(xs)
    return f"{m:.3f}" if len(xs) == 1 else f"{m:.3f} +- {sd:.3f}"


def _value_hi(rec: dict, of: str = "iou") -> float:
    """Value accuracy at IoU >= 0.4 (the pair-weighted mean of the two top bins); ``of="copy"``:
    copying the source view's annotation on the same pairs (NaN for cells run before the
    reports had it)."""
    v = rec["value_accuracy_by_iou"]
    bins = [k[4:] for k in v if k.startswith("iou_") and float(k[4:].split("-")[0]) >= 0.4]
    if any(f"{of}_{b}" not in v for b in bins):
        return math.nan
    n = sum(v[f"count_{b}"] for b in bins)
    return sum(v[f"{of}_{b}"] * v[f"count_{b}"] for b in bins) / max(n, 1)


def _metric(rec: dict, key: str) -> float:
    if key in ("value", "copy"):
        return _value_hi(rec, "iou" if key == "value" else "copy")
    return rec["probes"][key]


def group_table(records: list[dict], baselines: dict[str, dict]) -> str:
    """Markdown: one row per (label, budget), mean +- sd over seeds, then the baselines."""
    keys = [*PROBES, "value", "copy"]
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        c = r["cell"]
        label = ("AB_" if c["method"].startswith("ab_") else "") + METHODS[
            c["method"].removeprefix("ab_")] + (f" {c['variant']}" if c["variant"] else "")
        data = c["dataset"] + (f" + boot {c['boot_dataset']}" if c["boot_dataset"] else "")
        rows.setdefault((data, label, c["budget"]), []).append(r)
    lines = ["| data | method | AB steps | seeds | " + " | ".join(PROBES)
             + " | value acc IoU >= 0.4 | copy IoU >= 0.4 | majority | wall s / cell |",
             "|---|---|---:|---:|" + "---:|" * (len(keys) + 2)]
    for (data, label, budget), rs in sorted(rows.items(), key=lambda kv: kv[0]):
        trains_q = "--ab-weight" not in rs[0]["flags"] or rs[0]["flags"][
            rs[0]["flags"].index("--ab-weight") + 1] != "0"  # else Q_AB is untrained
        cells = [_fmt([_metric(r, k) for r in rs]) if k in rs[0]["probes"]
                 or (k in ("value", "copy") and trains_q
                     and not any(math.isnan(_metric(r, k)) for r in rs)) else "-"
                 for k in keys]
        maj = statistics.mean(r["value_accuracy_by_iou"]["majority"] for r in rs)
        wall = statistics.mean(r["wall_s"] for r in rs)
        lines.append(f"| {data} | {label} | {budget} | {len(rs)} | " + " | ".join(cells)
                     + f" | {maj:.3f} | {wall:.0f} |")
    for ds in dict.fromkeys(r["cell"]["probe_dataset"] or r["cell"]["boot_dataset"]
                            or r["cell"]["dataset"] for r in records):
        if ds not in baselines:
            continue
        b = baselines[ds]["probes"]
        rnd = b["random init"]
        lines.append(f"| {ds} | random init | - | twins | " + " | ".join(
            f"{rnd[k]:.3f} +- {rnd[k + '_sd']:.3f}" for k in PROBES) + " | | | | |")
        lines.append(f"| {ds} | raw pixels | - | - | " + " | ".join(
            f"{b['raw pixels'][k]:.3f}" for k in PROBES) + " | | | | |")
    return "\n".join(lines)


def cell_difference(a: list[dict], b: list[dict], key: str,
                    pooled: tuple[float, int] | None = None) -> tuple[float, float, bool]:
    """Metric ``key`` of cells ``a`` minus cells ``b`` (records, one per seed): its mean, 95%
    half-width and verdict. Where both sides ran the same seeds (at least two) the difference
    is paired per seed (:func:`paired_difference`: a seed gives AB and its base the same initial
    weights and base stream, so their shared noise cancels); otherwise :func:`difference`
    (Welch's, or ``pooled``)."""
    by_a, by_b = ({r["cell"]["seed"]: _metric(r, key) for r in xs} for xs in (a, b))
    if len(by_a) == len(a) == len(b) > 1 and by_a.keys() == by_b.keys():
        seeds = sorted(by_a)
        return paired_difference([by_a[s] for s in seeds], [by_b[s] for s in seeds])
    return difference([_metric(r, key) for r in a], [_metric(r, key) for r in b], pooled)


def gap_table(records: list[dict], pairs: Iterable[tuple[str, str]], pool: bool = False) -> str:
    """Markdown: AB minus base per (dataset, budget), with its 95% half-width and a verdict.
    Each difference is :func:`cell_difference`'s: paired per seed where both sides ran the
    same seeds, else Welch's, or with ``pool`` the seed sd pooled over all the records' cells
    of the same data and budget (:func:`pooled_sd`; the ablations: variants of one method),
    which also covers a one-seed variant."""
    keys = [*PROBES, "value"]
    by: dict[tuple, list[dict]] = {}
    for r in records:
        c = r["cell"]
        by.setdefault((c["dataset"], c["boot_dataset"], c["method"], c["variant"], c["budget"]),
                      []).append(r)
    lines = ["| data | comparison | AB steps | " + " | ".join(PROBES) + " |",
             "|---|---|---:|" + "---:|" * len(PROBES)]
    for (ab_m, ab_v), (base_m, base_v) in pairs:
        for (ds, boot, m, v, budget), rs in sorted(by.items(), key=lambda kv: kv[0]):
            if m != ab_m or v != ab_v:
                continue
            other = by.get((ds, boot, base_m, base_v, budget))
            if not other:
                continue
            cells = []
            for k in keys[:len(PROBES)]:
                noise = pooled_sd([[_metric(r, k) for r in xs] for key, xs in by.items()
                                   if (key[0], key[1], key[4]) == (ds, boot, budget)]
                                  ) if pool else None
                d, half, sig = cell_difference(rs, other, k, noise)
                cells.append(f"{d:+.3f} (1 seed: no noise estimate)" if math.isinf(half) else
                             f"{d:+.3f} +- {half:.3f}" + ("" if sig else " (noise)"))
            name_a = ab_m + (f"+{ab_v}" if ab_v else "")
            name_b = base_m + (f"+{base_v}" if base_v else "")
            lines.append(f"| {ds}{'+' + boot if boot else ''} | {name_a} - {name_b} | {budget} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def _simclr_pair(r: dict) -> bool:
    """Whether a record is a plain SimCLR / AB_SimCLR cell on fashion-scenes (the core table
    and the scaling curve)."""
    c = r["cell"]
    return (c["dataset"] == FS and not c["variant"] and not c["boot_dataset"]
            and c["method"] in ("simclr", "ab_simclr"))


def scaling_plot(records: list[dict], path: Path) -> bool:
    """PNG: AB_SimCLR minus SimCLR by budget (mean and 95% interval), one line per probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[tuple, list[dict]] = {}
    for r in filter(_simclr_pair, records):
        by.setdefault((r["cell"]["method"], r["cell"]["budget"]), []).append(r)
    budgets = sorted({b for m, b in by if (("simclr", b) in by and ("ab_simclr", b) in by)})
    if len(budgets) < 2:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, k in enumerate(PROBES):
        ds = [cell_difference(by[("ab_simclr", b)], by[("simclr", b)], k) for b in budgets]
        shift = 1.04 ** (i - (len(PROBES) - 1) / 2)  # side by side, so the bars do not overlap
        ax.errorbar([b * shift for b in budgets], [d for d, _, _ in ds],
                    yerr=[h if math.isfinite(h) else 0 for _, h, _ in ds], label=k, capsize=3,
                    marker="o")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("AB steps (the base method: equal views)")
    ax.set_ylabel("AB_SimCLR - SimCLR accuracy")
    ax.set_title(f"{FS}: the gain by budget (95% intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


BEGIN, END = "<!-- representation:begin -->", "<!-- representation:end -->"


def markers(scale: str) -> tuple[str, str]:
    """The marks around a scale's tables in ``docs/results.md``: each scale has its own place
    (the ``cpu`` scale keeps the unnamed marks it was first reported between)."""
    if scale == "cpu":
        return BEGIN, END
    return f"<!-- representation:{scale}:begin -->", f"<!-- representation:{scale}:end -->"


# scale -> the heading (its GitHub anchor) in docs/results.md above the scale's tables
RESULTS_ANCHORS = {"cpu-v2": "the-study-on-the-current-default-cpu-v2"}
RESULTS_ANCHOR = "8-does-bootstrapping-help-the-representation-study"


def report(out: Path, scale: str, results_md: Path | None) -> str:
    """Tables (and the scaling plot) from the cell files in ``out``; writes ``out/README.md``
    and, if given, replaces the study's section of ``results_md``."""
    import json

    files = sorted(p for p in out.glob("*.json"))
    records = [json.loads(p.read_text()) for p in files]
    baselines = {r["dataset"]: r for r in records if r["id"].endswith("__baselines")}
    cells = [r for r in records if "cell" in r]
    if not cells:
        return f"no finished cells in {out}"
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    parts = [f"Scale `{scale}`: {len(cells)} finished cells in `{where}`, "
             f"machine(s): {'; '.join(sorted({r['machine'] for r in cells}))}. "
             f"Total {sum(r['wall_s'] for r in cells) / 3600:.1f} h of cell time. "
             "Each row: mean +- sd over seeds; a difference is called one only when its 95% "
             "interval excludes 0, else it is marked (noise): paired per seed (Student's t, "
             "n - 1 df) where both sides ran the same seeds, else Welch's.", ""]
    for g in GROUPS:
        rs = [r for r in cells if r["cell"]["group"] == g]
        if g in ("core", "scaling"):  # one set of cells (run once, under the first group)
            rs = [r for r in cells if _simclr_pair(r) and (
                g == "scaling" or r["cell"]["budget"] == SCALES[scale]["budget"])]
        if not rs or (g == "scaling" and len({r["cell"]["budget"] for r in rs}) < 2):
            continue
        parts += [f"### {g}", "", group_table(rs, baselines), ""]
        if g == "ablations":
            core = [r for r in cells if r["cell"]["method"] == "ab_simclr"
                    and r["cell"]["dataset"] == FS and not r["cell"]["variant"]
                    and r["cell"]["budget"] == SCALES[scale]["budget"]]
            pairs = [(("ab_simclr", v), ("ab_simclr", "")) for v in VARIANTS if v]
            seeds: dict[str, list[float]] = {}
            for r in rs + core:
                seeds.setdefault(r["cell"]["variant"], []).append(r["probes"]["linear"])
            df = pooled_sd(seeds.values())[1]
            parts += ["Each variant minus AB_SimCLR, paired per seed where the variant ran "
                      "AB_SimCLR's seeds; otherwise the noise is the seed-to-seed sd pooled "
                      "over all the cells of this table and AB_SimCLR's "
                      f"({df} degrees of freedom), so a variant of one seed gets an interval "
                      "too (assuming the variants share AB_SimCLR's seed noise).", "",
                      gap_table(rs + core, pairs, pool=True), ""]
        else:
            pairs = [((f"ab_{b}", ""), (b, "")) for b in METHODS]
            parts += [gap_table(rs, pairs), ""]
    png = out / "scaling.png"
    plotted = scaling_plot(cells, png)

    def text_for(md: Path) -> str:  # the plot's link, relative to the file that shows it
        link = os.path.relpath(png.resolve(), md.resolve().parent)
        return "\n".join(parts + ([f"![the gain by budget]({link})", ""] if plotted else []))

    text = text_for(out / "README.md")
    doc = results_md.read_text() if results_md is not None and results_md.exists() else ""
    begin, end = markers(scale)
    if begin in doc and end in doc:  # the tables stand once, there; the folder links to them
        head, rest = doc.split(begin, 1)
        results_md.write_text(head + begin + "\n" + text_for(results_md) + "\n" + end
                              + rest.split(end, 1)[1])
        link = os.path.relpath(results_md.resolve(), out.resolve())
        anchor = RESULTS_ANCHORS.get(scale, RESULTS_ANCHOR)
        flag = "" if scale == "cpu" else f" --scale {scale}"
        (out / "README.md").write_text(
            f"The tables of the cells in this folder (one JSON file per `train_value.py` run) "
            f"stand once, in [{results_md.name}, section 8]({link}#{anchor}), between "
            f"its `{begin}` / `{end}` marks; `python -m studies.representation --report{flag}` "
            "regenerates them there from these files."
            + (" The scaling plot: [scaling.png](scaling.png)." if plotted else "") + "\n")
    else:
        (out / "README.md").write_text(text + "\n")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", nargs="+", default=GROUPS, help=f"of {GROUPS}")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds of every cell (default 1 2 3; --quick: 1)")
    p.add_argument("--scale", choices=list(SCALES), default="cpu")
    p.add_argument("--quick", action="store_true", help="--scale quick: every cell tiny")
    p.add_argument("--out", default="", help="cell files (default docs/results/representation/"
                   "<scale>)")
    p.add_argument("--parallel", type=int, default=1, help="cells at once")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per cell (0: 2 // parallel, at least 1)")
    p.add_argument("--only", nargs="+", default=None,
                   help="run only the planned cells whose id contains one of these strings "
                   "(e.g. +gamma-0 +boot-base)")
    p.add_argument("--report", action="store_true", help="only regenerate the tables")
    p.add_argument("--dry-run", action="store_true", help="list the cells and stop")
    args = p.parse_args()
    scale = "quick" if args.quick else args.scale
    args.seeds = args.seeds or ([1] if scale == "quick" else [1, 2, 3])
    out = Path(args.out) if args.out else ROOT / "docs" / "results" / "representation" / scale
    results_md = ROOT / "docs" / "results.md" if not args.out and scale != "quick" else None
    if args.report:
        print(report(out, scale, results_md))
        return
    plan = Plan(scale, args.seeds, args.groups)
    if args.only:
        plan.cells = [c for c in plan.cells if any(o in c.cell_id for o in args.only)]
    todo = [c for c in plan.cells if load_cell(out, c.cell_id) is None]
    print(f"{len(plan.cells)} cells, {len(todo)} to run; out {out}")
    if args.dry_run:
        for c in plan.cells:
            print(("  todo " if c in todo else "  done ") + c.cell_id)
        return
    threads = args.threads or max(1, 2 // args.parallel)
    for ds in dict.fromkeys(c.probe_dataset or c.boot_dataset or c.dataset for c in plan.cells):
        baseline_cell(ds, out, scale, threads)
    cache: dict = {}
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda c: run_cell(c, out, scale, threads, cache), plan.cells))
    print(report(out, scale, results_md))


if __name__ == "__main__":
    main()
