"""The study's plumbing (studies/representation.py): cells, equal views, resume, report, and
its intervals (scipy's t quantiles, checked against scipy's own t tests)."""

import json
import re
from pathlib import Path

import pytest
from scipy import stats

from studies import representation as rep


def test_plan_cells_are_unique_and_shared_cells_run_once():
    plan = rep.Plan("quick", [1, 2], rep.GROUPS)
    ids = [c.cell_id for c in plan.cells]
    assert len(ids) == len(set(ids))
    # the core cells at the main budget are also scaling's: planned once, under core
    main = [c for c in plan.cells if c.dataset == rep.FS and c.method in ("simclr", "ab_simclr")
            and not c.variant and c.budget == rep.SCALES["quick"]["budget"]]
    assert len(main) == 4 and {c.group for c in main} == {"core"}
    assert {c.variant for c in plan.cells if c.group == "ablations"} == set(rep.VARIANTS) - {""}
    with pytest.raises(SystemExit, match="unknown group"):
        rep.Plan("quick", [1], ["cores"])


def test_base_runs_see_as_many_views_as_ab_runs():
    cache: dict = {}
    ab = rep.Cell("core", "scenes", "ab_simclr", budget=300, seed=1)
    base = rep.Cell("core", "scenes", "simclr", budget=300, seed=1)
    assert rep.steps_for(ab, "cpu", cache) == 300
    steps = rep.steps_for(base, "cpu", cache)
    ab_views, base_views = cache[("scenes", "", "simclr")]
    assert ab_views > base_views  # the AB step also renders the bootstrap views
    assert abs(steps * base_views - 300 * ab_views) <= base_views / 2
    flags = base.flags("cpu", steps)
    assert flags[flags.index("--ab-weight") + 1] == "0" and "--no-probe-baselines" in flags
    # the equal-steps ablation is an AB cell with the loss off: not rescaled
    no_boot = rep.Cell("ablations", "scenes", "ab_simclr", "no-boot-loss", 300, 1)
    assert rep.steps_for(no_boot, "cpu", cache) == 300
    assert no_boot.flags("cpu", 300)[-2:] == ["--ab-weight", "0"]


def _summary(acc: float) -> dict:
    value = {"iou_0.00-0.20": 0.1, "iou_0.40-0.60": acc, "iou_0.60-1.00": acc,
             "count_0.00-0.20": 10, "count_0.40-0.60": 5, "count_0.60-1.00": 5,
             "copy_0.00-0.20": 0.1, "copy_0.40-0.60": 0.2, "copy_0.60-1.00": 0.4,
             "majority": 0.2, "chance": 0.1}
    return {"probes": {"trained": {"linear": acc, "knn": acc, "attentive": acc, "n_test": 100}},
            "value_accuracy_by_iou": value, "final": {"loss": 1.0}}


def test_finished_cells_are_skipped_and_records_complete(tmp_path):
    calls = []

    def runner(flags, out, name, threads):
        calls.append(name)
        return _summary(0.5), 1.0, "0.0 -> 0.0"

    cell = rep.Cell("core", "scenes", "ab_simclr", budget=8, seed=1)
    first = rep.run_cell(cell, tmp_path, "quick", 1, {}, runner)
    again = rep.run_cell(cell, tmp_path, "quick", 1, {}, runner)
    assert calls == [cell.cell_id] and first == again
    on_disk = json.loads((tmp_path / f"{cell.cell_id}.json").read_text())
    assert on_disk["steps"] == 8 and on_disk["probes"]["linear"] == 0.5
    assert {"flags", "wall_s", "machine", "load", "cell", "code"} <= set(on_disk)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_pooled_noise_gives_one_seed_cells_an_interval():
    sd, df = rep.pooled_sd([[0.40, 0.42, 0.44], [0.50, 0.52], [0.9]])  # the single seed: no df
    assert df == 3 and sd == pytest.approx(((0.0008 + 0.0002) / 3) ** 0.5)
    d, half, sig = rep.difference([0.50], [0.40, 0.42, 0.44], (0.01, 8))
    assert d == pytest.approx(0.08) and half == pytest.approx(
        stats.t.ppf(0.975, 8) * 0.01 * (1 + 1 / 3) ** 0.5)  # 2.306: t at 8 df
    assert sig
    assert not rep.difference([0.425], [0.40, 0.42, 0.44], (0.01, 8))[2]
    assert rep.difference([0.5], [0.4], (0.0, 0))[1] == float("inf")  # nothing pooled


def test_difference_calls_noise_noise():
    d, half, sig = rep.difference([0.50, 0.52, 0.48], [0.49, 0.51, 0.50])
    assert d == pytest.approx(0.0, abs=1e-12) and not sig
    d, half, sig = rep.difference([0.60, 0.61, 0.59], [0.50, 0.51, 0.49])
    assert d == pytest.approx(0.10) and sig and 0 < half < 0.1
    _, half, sig = rep.difference([0.6], [0.5])  # one seed: no estimate of the noise
    assert half == float("inf") and not sig


def test_t_quantile_is_scipys_at_fractional_degrees_of_freedom():
    assert rep.t95(2) == pytest.approx(4.302653, rel=1e-6)  # the old table said 4.30
    assert rep.t95(8) == pytest.approx(2.306004, rel=1e-6)
    # Welch's df is fractional: no longer rounded down to the table's next lower entry
    # (4.6 df used to get 4 df's 2.78, 14 df used 10 df's 2.23)
    assert rep.t95(5) < rep.t95(4.6) < rep.t95(4) and rep.t95(4.6) < 2.776
    assert rep.t95(14) == pytest.approx(stats.t.ppf(0.975, 14)) and rep.t95(14) < 2.15
    with pytest.raises(ValueError, match="degrees of freedom"):
        rep.t95(0)


def _ci_half(res) -> float:
    ci = res.confidence_interval(0.95)
    return (ci.high - ci.low) / 2


@pytest.mark.parametrize("a, b", [
    ([0.60, 0.61, 0.59], [0.50, 0.51, 0.49]),
    ([0.50, 0.52, 0.48], [0.49, 0.51, 0.50]),
    ([0.61, 0.66, 0.58, 0.70], [0.55, 0.56, 0.555]),  # unequal sizes and spreads
    ([0.40, 0.47, 0.43], [0.40, 0.401, 0.399, 0.4005, 0.3995]),
])
def test_welch_difference_is_scipys_welch_t_test(a, b):
    d, half, sig = rep.difference(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    assert d == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert half == pytest.approx(_ci_half(res), rel=1e-9)
    assert sig == (res.pvalue < 0.05)


@pytest.mark.parametrize("a, b", [
    ([0.60, 0.62, 0.61], [0.50, 0.50, 0.52]),
    ([0.50, 0.52, 0.48], [0.49, 0.51, 0.50]),
    ([0.31, 0.35, 0.30, 0.33], [0.30, 0.31, 0.31, 0.30]),
])
def test_paired_difference_is_scipys_paired_t_test(a, b):
    d, half, sig = rep.paired_difference(a, b)
    res = stats.ttest_rel(a, b)
    assert d == pytest.approx(sum(x - y for x, y in zip(a, b, strict=True)) / len(a))
    assert half == pytest.approx(_ci_half(res), rel=1e-9)
    assert sig == (res.pvalue < 0.05)
    assert rep.paired_difference([0.6], [0.5])[1] == float("inf")  # one pair: no noise estimate
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        rep.paired_difference([0.6, 0.5], [0.5])


def test_report_regenerates_the_results_section(tmp_path):
    out = tmp_path / "cells"
    for seed, (a, b) in enumerate([(0.60, 0.50), (0.62, 0.50), (0.61, 0.52)], start=1):
        for method, acc in (("ab_simclr", a), ("simclr", b)):
            cell = rep.Cell("core", rep.FS, method, budget=8, seed=seed)
            rep.run_cell(cell, out, "quick", 1, {("fashion-scenes", "", "simclr"): (40, 32)},
                         lambda *_, acc=acc: (_summary(acc), 1.0, "0 -> 0"))
    doc = tmp_path / "results.md"
    begin, end = rep.markers("quick")
    doc.write_text(f"# results\n\nbefore\n{begin}\nold\n{end}\nafter\n")
    text = rep.report(out, "quick", doc)
    new = doc.read_text()
    assert "old" not in new and new.startswith("# results\n\nbefore\n") and new.endswith(
        "after\n") and text in new
    assert "| fashion-scenes | AB_SimCLR | 8 | 3 | 0.610 +- 0.010" in text
    assert "ab_simclr - simclr | 8 | +0.103 +- " in text and "(noise)" not in text.split(
        "ab_simclr - simclr")[1].split("|")[2]
    # the base method's row shows no value accuracy (its decoder is never trained)
    base_row = next(ln for ln in text.splitlines() if "| SimCLR | 8 |" in ln)
    assert base_row.split("|")[8].strip() == base_row.split("|")[9].strip() == "-"
    # beside Q, copying the source view on the same pairs (the bar a value function must clear)
    ab_row = next(ln for ln in text.splitlines() if "| AB_SimCLR | 8 |" in ln)
    assert ab_row.split("|")[9].strip() == "0.300 +- 0.000"
    # a cell from before the reports had copy shows none (not a made-up number)
    old = {"value_accuracy_by_iou": {k: v for k, v in _summary(0.5)["value_accuracy_by_iou"]
                                     .items() if not k.startswith("copy_")}}
    assert rep._value_hi(old, "copy") != rep._value_hi(old, "copy")  # NaN


def test_gaps_are_paired_per_seed_and_each_scale_keeps_its_own_section(tmp_path):
    # the seeds move both methods together (shared initial weights and base stream): paired,
    # AB is 0.01 ahead on every seed, outside the noise; unpaired (Welch) it would be noise
    out = tmp_path / "cells"
    for seed, level in ((1, 0.40), (2, 0.50), (3, 0.60)):
        for method, acc in (("ab_simclr", level + 0.01 + 0.001 * seed), ("simclr", level)):
            cell = rep.Cell("core", rep.FS, method, budget=8, seed=seed)
            rep.run_cell(cell, out, "quick", 1, {("fashion-scenes", "", "simclr"): (40, 32)},
                         lambda *_, acc=acc: (_summary(acc), 1.0, "0 -> 0"))
    recs = [json.loads(f.read_text()) for f in sorted(out.glob("*.json"))]
    ab = [r for r in recs if r["cell"]["method"] == "ab_simclr"]
    base = [r for r in recs if r["cell"]["method"] == "simclr"]
    d, half, sig = rep.cell_difference(ab, base, "linear")
    assert (d, half, sig) == pytest.approx(
        rep.paired_difference([0.411, 0.512, 0.613], [0.40, 0.50, 0.60]))
    assert sig and abs(d - 0.012) < 1e-9
    assert not rep.difference([0.411, 0.512, 0.613], [0.40, 0.50, 0.60])[2]  # Welch: noise
    # a seed missing on one side: not paired (Welch over what there is)
    assert rep.cell_difference(ab[:2], base, "linear") == pytest.approx(rep.difference(
        [0.411, 0.512], [0.40, 0.50, 0.60]))
    # the report writes between its own scale's marks and leaves the other scale's alone
    doc = tmp_path / "results.md"
    cpu_begin, cpu_end = rep.markers("cpu")
    begin, end = rep.markers("quick")
    assert (begin, end) != (cpu_begin, cpu_end)
    doc.write_text(f"{cpu_begin}\ncpu tables\n{cpu_end}\n{begin}\nold\n{end}\n")
    text = rep.report(out, "quick", doc)
    assert "ab_simclr - simclr | 8 | +0.012 +- " in text
    assert doc.read_text().startswith(f"{cpu_begin}\ncpu tables\n{cpu_end}\n")
    assert "old" not in doc.read_text() and text in doc.read_text()


def test_report_links_the_scaling_plot_from_each_file_that_shows_it(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "ROOT", tmp_path)  # laid out like the repository: docs/results/...
    out = tmp_path / "docs" / "results" / "cells"
    for budget in (8, 16):
        for seed in (1, 2):
            for method, acc in (("ab_simclr", 0.6), ("simclr", 0.5 + 0.01 * seed)):
                cell = rep.Cell("scaling", rep.FS, method, budget=budget, seed=seed)
                rep.run_cell(cell, out, "quick", 1, {},
                             lambda *_, acc=acc: (_summary(acc), 1.0, "0 -> 0"))
    doc = tmp_path / "docs" / "results.md"
    doc.write_text("{}\n{}\n".format(*rep.markers("quick")))
    rep.report(out, "quick", doc)
    assert (out / "scaling.png").stat().st_size > 0
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", doc.read_text())
    assert links and not any(Path(link).is_absolute() for link in links), links
    assert all((doc.parent / link).resolve() == (out / "scaling.png").resolve()
               for link in links), links
    # the folder's README links to the tables instead of holding a second copy
    readme = (out / "README.md").read_text()
    assert "|---" not in readme, readme
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert {(out / t).resolve() for t in targets} == {doc.resolve(),
                                                      (out / "scaling.png").resolve()}


def test_one_tiny_cell_end_to_end(tmp_path):
    """A real train_value run at the quick scale: the cell file holds its probes."""
    cell = rep.Cell("core", "scenes", "ab_simclr", budget=3, seed=1)
    record = rep.run_cell(cell, tmp_path, "quick", 1, {})
    assert record["steps"] == 3 and set(rep.PROBES) <= set(record["probes"])
    assert "iou_0.60-1.00" in record["value_accuracy_by_iou"]
    assert json.loads((tmp_path / f"{cell.cell_id}.json").read_text()) == record


def test_dino_cells_carry_the_batch_norm_head_and_parse():
    from agents.train_value import parse_args

    dino = rep.Cell("bases", rep.FS, "ab_dino", budget=1200, seed=1)
    simclr = rep.Cell("core", rep.FS, "ab_simclr", budget=1200, seed=1)
    flags = dino.flags("cpu", 1200)
    assert flags[flags.index("--head-norm") + 1] == "batch"
    assert "--head-norm" not in simclr.flags("cpu", 1200)
    assert "--head-norm" not in dino.flags("gpu", 20000)  # ViT-S/16: DINO's ViT head
    args = parse_args(flags)
    assert args.ab.head_norm == "batch" and args.ab.base == "dino" and args.n_views == 4


def test_cpu_v2_cells_run_the_current_default_at_the_papers_bootstrap_ratio():
    from agents.infra.config import resolved
    from agents.train_value import parse_args

    ab = rep.Cell("core", rep.FS, "ab_simclr", budget=1200, seed=1)
    args = resolved(parse_args(ab.flags("cpu-v2", 1200)))
    default = resolved(parse_args([]))
    assert args.boot_images == args.base_batch // 8 == 8  # the paper's base/8
    assert args.n_views == default.n_views and args.ab == default.ab  # the default head etc.
    old = resolved(parse_args(ab.flags("cpu", 1200)))
    assert (old.boot_images, old.n_views) == (16, 4)  # the first study's pinned batch
