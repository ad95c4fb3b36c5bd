"""`morphoscale compare`: every setup of a grid under the same budget, counted; tables and
plots; a second call is served from the cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

GRID = """
name: g
data: {simulate: {preset: tiny, seed: 0}}
models:
  - {name: mae, model: mae_vit_tiny_patch8_64, model_overrides: {depth: 1}}
  - {name: byol, model: byol_midl_cnn_64}
augment: [none]
crop: [one, multi]
seeds: [0, 1]
budget: {images: 96}
train: {batch_size: 8, warmup_steps: 1, lr: 1.0e-3, n_global: 2, n_local: 2}
bench: {null_size: 200}
references: [{name: oracle, kind: oracle}]
workers: 2
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from morphoscale.compare.grid import compare, load_compare_config

    root = tmp_path_factory.mktemp("grid")
    (root / "g.yaml").write_text(GRID)
    results = compare(load_compare_config(root / "g.yaml"), root / "run", progress=False)
    return root, results


def test_every_setup_sees_the_same_number_of_images(grid):
    root, r = grid
    assert len(r) == 2 * 2 * 2 + 1
    ref, r = r[r["augment"] == "-"], r[r["augment"] != "-"]
    # the reference is scored beside the cells, outside the budget
    assert list(ref["name"]) == ["oracle"] and ref["recall_CORUM"].notna().all() and ref["images_seen"].isna().all()
    # counted by each run (resources.json), not assumed: BYOL's two views and multi-crop's
    # four crops per site take fewer steps for the same images
    assert (r["images_seen"] == 96).all()
    steps = r.set_index("name")["optimizer_steps"]
    assert steps["mae-none-one-s0"] == 12 and steps["byol-none-one-s0"] == 6 and steps["mae-none-multi-s0"] == 3
    assert (r["training_flops"] > 0).all() and (r["wall_seconds"] > 0).all() and (r["peak_rss_mb"] > 0).all()
    np.testing.assert_allclose(r["training_flops"], r["flops_per_image"] * 96)
    assert (
        r["recall_CORUM"].notna().all() and ((r["random_recall"] - 0.1).abs() < 0.01).all()
    )  # the rank rule on the tiny map's null
    assert (r["recall_CORUM_ci_low"] <= r["recall_CORUM"]).all() and (
        r["recall_CORUM"] <= r["recall_CORUM_ci_high"]
    ).all()


def test_summary_is_mean_and_sd_over_seeds_and_the_outputs_exist(grid):
    root, r = grid
    s = pd.read_csv(root / "run" / "compare" / "summary.csv")
    assert len(s) == 5 and list(s["n_seeds"]) == [2, 2, 2, 2, 1]
    row = s[(s.model == "mae") & (s.crop == "one")].iloc[0]
    seeds = r[(r.model == "mae") & (r.crop == "one")]["recall_CORUM"]
    assert row["recall_CORUM_mean"] == pytest.approx(seeds.mean()) and row["recall_CORUM_sd"] == pytest.approx(
        seeds.std(ddof=1)
    )
    for f in ("results.csv", "recall_vs_flops.png", "recall_vs_cost.png"):
        assert (root / "run" / "compare" / f).exists(), f
    md = (root / "run" / "compare" / "results.md").read_text().splitlines()
    assert len(md) == len(r) + 2 and md[2].startswith("| mae-none-one-s0 | 96 |")
    page = (root / "run" / "report.html").read_text()
    assert "Comparison grid" in page and "mae-none-multi-s1" in page


def test_a_second_call_resumes_from_the_cache(grid, capsys):
    root, r = grid
    before = {f.name: json.loads(f.read_text())["key"] for f in (root / "run" / "stages").glob("*.json")}
    rc, out, err = run_cli(capsys, "compare", root / "g.yaml", "--out", root / "run", "--quiet")
    assert rc == 0, err
    assert err.count(": cached") == len(before)  # every stage
    assert "mae-none-one-s0" in out


def test_grid_config_errors(tmp_path, capsys):
    cases = [
        (GRID.replace("budget: {images: 96}", "budget: {images: 100}"), "key 'budget.images'"),
        (GRID.replace("budget: {images: 96}", "budget: {images: 96, steps: 3}"), "exactly one of"),
        (GRID.replace("model: byol_midl_cnn_64", "model: byol_huge"), "unknown preset 'byol_huge'"),
        (
            GRID.replace("train: {batch_size: 8", "train: {max_steps: 3, batch_size: 8"),
            "train.max_steps is set by the grid",
        ),
        (GRID + "colour: red\n", "key 'colour'"),
        (GRID.replace("name: oracle", "name: mae-none-one-s1"), "reference name 'mae-none-one-s1'"),
    ]
    for i, (text, expected) in enumerate(cases):
        (tmp_path / f"c{i}.yaml").write_text(text)
        rc, _, err = run_cli(capsys, "compare", tmp_path / f"c{i}.yaml", "--out", tmp_path / f"o{i}")
        assert_one_line_error(rc, err, expected)
        assert not (tmp_path / f"o{i}").exists()


def test_isolated_cells_measure_their_own_memory_not_the_callers(sim_store, tmp_path):
    """Cells train in their own process by default: 1.5 GiB held by the calling process does
    not show in a cell's peak memory; trained in-process, it does (so the test can tell)."""
    from morphoscale.compare.grid import compare, load_compare_config

    ballast = np.ones(1536 * 2**20 // 8)  # resident: every page written
    peaks = {}
    for isolate in (True, False):
        (tmp_path / f"{isolate}.yaml").write_text(f"""
name: iso
data: {{store: {sim_store}}}
models: [{{name: ae, model: ae_midl_cnn_64}}]
budget: {{steps: 2}}
train: {{batch_size: 8, warmup_steps: 1}}
bench: {{null_size: 200}}
isolate: {str(isolate).lower()}
""")
        r = compare(load_compare_config(tmp_path / f"{isolate}.yaml"), tmp_path / f"run{isolate}", progress=False)
        assert r["optimizer_steps"].iloc[0] == 2
        peaks[isolate] = float(r["peak_rss_mb"].iloc[0])
    assert ballast[-1] == 1.0
    assert peaks[True] < 1536 < peaks[False], peaks


def test_an_isolated_cell_that_fails_says_why_in_one_line(sim_store, tmp_path, capsys):
    (tmp_path / "g.yaml").write_text(f"""
data: {{store: {sim_store}}}
models: [{{name: ae, model: ae_midl_cnn_64}}]
budget: {{steps: 2}}
train: {{batch_size: 8, crop_size: 1000}}
""")
    rc, _, err = run_cli(capsys, "compare", tmp_path / "g.yaml", "--out", tmp_path / "run", "--quiet")
    # the stages run so far are listed above it; the error is the last line
    assert_one_line_error(rc, err.strip().splitlines()[-1], "in its own process", "key 'crop_size'", "1000")
    assert not (tmp_path / "run" / "encoders" / "ae-none-one-s0" / "train" / "model.ckpt").exists()


def test_cells_trained_in_parallel_equal_cells_trained_one_at_a_time(sim_store, tmp_path):
    import torch

    from morphoscale.compare.grid import compare, load_compare_config

    results = {}
    for parallel in (1, 2):
        (tmp_path / f"p{parallel}.yaml").write_text(f"""
data: {{store: {sim_store}}}
models: [{{name: ae, model: ae_midl_cnn_64}}]
seeds: [0, 1]
budget: {{steps: 3}}
train: {{batch_size: 8, warmup_steps: 1}}
bench: {{null_size: 200}}
parallel: {parallel}
""")
        results[parallel] = compare(
            load_compare_config(tmp_path / f"p{parallel}.yaml"), tmp_path / f"run{parallel}", progress=False
        )
        for seed in (0, 1):
            assert (tmp_path / f"run{parallel}" / "stages" / f"train--ae-none-one-s{seed}.json").exists()
    a, b = results[1].set_index("name"), results[2].set_index("name")
    pd.testing.assert_series_equal(a["recall_CORUM"], b["recall_CORUM"])
    assert (b["optimizer_steps"] == 3).all()
    for seed in (0, 1):
        w1, w2 = (
            torch.load(
                tmp_path / f"run{p}" / "encoders" / f"ae-none-one-s{seed}" / "train" / "model.ckpt", weights_only=False
            )["state_dict"]
            for p in (1, 2)
        )
        for k in w1:
            torch.testing.assert_close(w1[k], w2[k])
