"""`morphoscale run` (stage caching, --from) and `morphoscale report` (a self-contained page,
checked in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

TINY = """
name: tiny
data:
  simulate: {preset: tiny, seed: 0}
workers: 2
encoders:
  - name: mae
    train: {model: mae_vit_tiny_patch8_64, max_steps: 4, batch_size: 8, preview_every: 2, log_every: 1}
    baseline: random_init
  - name: random_init
    train: {model: mae_vit_tiny_patch8_64, random_init: true}
  - name: features
    kind: features
  - name: oracle
    kind: oracle
bench: {null_size: 200}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from morphoscale.flow.config import load_run_config
    from morphoscale.flow.pipeline import Flow

    root = tmp_path_factory.mktemp("run")
    (root / "tiny.yaml").write_text(TINY)
    flow = Flow(load_run_config(root / "tiny.yaml"), root / "out")
    flow.run(progress=False)
    return root


def _stage_keys(run: Path) -> dict:
    return {
        f.stem: json.loads(f.read_text())["finished"] + json.loads(f.read_text())["key"]
        for f in (run / "stages").glob("*.json")
    }


def test_run_writes_every_stage_and_the_report(tiny_run):
    out = tiny_run / "out"
    for p in (
        "store.zarr",
        "screen/ground_truth",
        "encoders/mae/train/model.ckpt",
        "encoders/features/embeddings.h5ad",
        "encoders/oracle/map.h5ad",
        "encoders/random_init/bench/summary.json",
        "recall.csv",
        "report.html",
        "run.yaml",
    ):
        assert (out / p).exists(), p
    assert (
        len(list((out / "stages").glob("*.json"))) == 1 + 4 * 4 - 2 + 1
    )  # data, 2 trains, 4 x embed/map/bench, report
    recall = pd.read_csv(out / "recall.csv")
    assert set(recall["encoder"]) == {"mae", "random_init", "features", "oracle"}
    oracle = recall[(recall.encoder == "oracle") & (recall.source == "CORUM")].recall.item()
    rnd = recall[(recall.encoder == "oracle") & (recall.source == "CORUM")].random.item()
    assert oracle > 2 * rnd  # the ceiling recovers the simulated complexes
    # the MAE against its floor, paired on the same genes and wells, every headline metric with its interval
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["encoder"]) == {"mae"} and set(paired["baseline"]) == {"random_init"}
    row = paired[paired.metric == "recall/CORUM/5"].iloc[0]
    mae, rnd_init = (
        recall[(recall.encoder == e) & (recall.source == "CORUM")].recall.item() for e in ("mae", "random_init")
    )
    assert row.difference == pytest.approx(mae - rnd_init) and row.ci_low <= row.difference <= row.ci_high
    assert {"decoding_r2", "truth_cosine_spearman"} <= set(paired.metric)  # the simulated truth, through the run
    # the oracle decodes its own parameters and follows the true geometry far better than an untrained ViT
    oracle_s, floor_s = (
        json.loads((out / "encoders" / e / "bench" / "summary.json").read_text()) for e in ("oracle", "random_init")
    )
    assert oracle_s["decoding_r2"]["mean_r2"] > floor_s["decoding_r2"]["mean_r2"] + 0.3
    # every stage records what its numbers depend on (docs/reliability.md)
    import anndata as ad

    assert floor_s["determinism"]["numpy"] == np.__version__ and "environment" in floor_s["determinism"]
    for f in ("embeddings.h5ad", "map.h5ad"):
        assert (
            json.loads(ad.read_h5ad(out / "encoders" / "random_init" / f).uns["provenance"]["determinism"])["numpy"]
            == np.__version__
        )
    assert (
        json.loads((out / "encoders" / "mae" / "train" / "config.json").read_text())["determinism"][
            "deterministic_algorithms"
        ]
        is True
    )
    assert oracle_s["truth_cosine"]["spearman"] > 0.5 > floor_s["truth_cosine"]["spearman"]
    page = (out / "report.html").read_text()
    assert "Each encoder against its baseline, paired" in page and "Against the simulated truth" in page


def test_rerun_is_cached_and_changes_rerun_only_what_depends_on_them(tiny_run, capsys):
    cfg, out = tiny_run / "tiny.yaml", tiny_run / "out"
    before = _stage_keys(out)
    rc, stdout, err = run_cli(capsys, "run", cfg, "--out", out, "--quiet")
    assert rc == 0, err
    assert _stage_keys(out) == before and err.count(": cached") == len(before)

    # the printed table is recall.csv, which the report embeds
    recall = pd.read_csv(out / "recall.csv")
    header = next(line for line in stdout.splitlines() if "encoder" in line)
    sources = re.findall(r"[A-Za-z]+", header)[1:]
    assert sources == list(dict.fromkeys(recall.source))
    for enc, rows in recall.groupby("encoder"):
        line = next(line for line in stdout.splitlines() if re.match(rf"\W*{enc}\W", line))
        printed = [float(v) for v in re.findall(r"\d+\.\d{3}", line)]  # each cell: recall [low, high]
        r = rows.set_index("source").reindex(sources)
        assert printed == [round(v, 3) for triple in zip(r.recall, r.ci_low, r.ci_high) for v in triple]
    page = (out / "report.html").read_text()
    embedded = json.loads(
        re.search(r'<script type="application/json" id="recall-table">(.*?)</script>', page, re.S).group(1)
    )
    pd.testing.assert_frame_equal(pd.DataFrame(embedded), recall, check_dtype=False)

    # another alignment: data, train and embed stay; map, bench and report re-run
    (tiny_run / "tiny2.yaml").write_text(TINY + "map: {align: center_scale}\n")
    rc, _, err = run_cli(capsys, "run", tiny_run / "tiny2.yaml", "--out", out, "--quiet")
    assert rc == 0, err
    after = _stage_keys(out)
    for stage in before:
        same = before[stage] == after[stage]
        assert same == (stage.split("--")[0] in ("data", "train", "embed")), stage

    # --from embed re-runs embed and everything after it, nothing before
    rc, _, err = run_cli(capsys, "run", tiny_run / "tiny2.yaml", "--out", out, "--quiet", "--from", "embed")
    assert rc == 0, err
    again = _stage_keys(out)
    for stage in before:
        assert (again[stage] == after[stage]) == (stage.split("--")[0] in ("data", "train")), stage


def test_check_reproducible_reruns_a_stage_compares_and_leaves_the_run_as_it_was(tiny_run, capsys):
    cfg, out = tiny_run / "tiny.yaml", tiny_run / "out"
    run_cli(capsys, "run", cfg, "--out", out, "--quiet")
    ckpt = (out / "encoders/mae/train/model.ckpt").read_bytes()
    rc, stdout, err = run_cli(
        capsys,
        "run",
        cfg,
        "--out",
        out,
        "--quiet",
        "--check-reproducible",
        "train:mae",
        "--check-reproducible",
        "embed:features",
    )
    assert rc == 0, err
    t = pd.read_csv(out / "reproducible.csv")
    assert set(t.stage) == {"train:mae", "embed:features"} and t.equal.all(), t
    assert "encoders/mae/train/model.ckpt" in set(t.output) and "encoders/features/embeddings.h5ad" in set(t.output)
    assert (out / "encoders/mae/train/model.ckpt").read_bytes() == ckpt  # the run's own file, put back
    assert (out / "reproduce/train--mae/0-train/model.ckpt").exists()  # the re-run's, for a look

    # a stage whose output does not come out the same is reported, exit 1, and the run keeps its own output
    emb = out / "encoders/features/embeddings.h5ad"
    import anndata as ad

    good = emb.read_bytes()
    a = ad.read_h5ad(emb)
    a.X[0, 0] += 1.0
    a.write_h5ad(emb)
    tampered = emb.read_bytes()
    try:
        rc, stdout, err = run_cli(capsys, "run", cfg, "--out", out, "--quiet", "--check-reproducible", "embed:features")
        assert rc == 1 and "1 of 1 outputs differ" in err, err
        row = pd.read_csv(out / "reproducible.csv").iloc[0]
        assert not row.equal and row.max_abs_diff == pytest.approx(1.0, abs=1e-5) and "X" in row.detail
        assert emb.read_bytes() == tampered
    finally:
        emb.write_bytes(good)
    rc, _, err = run_cli(capsys, "run", cfg, "--out", out, "--quiet", "--check-reproducible", "train:nope")
    assert_one_line_error(rc, err, "train:nope", "not a stage")


def test_report_of_a_half_written_run_folder(tiny_run, tmp_path, capsys):
    """A run folder a kill left half-written (a torn stage record, a metrics log cut mid-line,
    an encoder without its bench): the report is written from what is there, no traceback."""
    import shutil

    from cli_helpers import run_cli

    half = tmp_path / "half"
    shutil.copytree(tiny_run / "out", half, ignore=shutil.ignore_patterns("store.zarr", "screen"))
    records = sorted((half / "stages").glob("*.json"))
    records[-1].write_text(records[-1].read_text()[:20])
    metrics = next(half.glob("encoders/*/train/logs/metrics.csv"))
    metrics.write_text(metrics.read_text() + "12,0.5,")
    shutil.rmtree(next(half.glob("encoders/*/bench")))
    (half / "report.html").unlink()
    rc, out, err = run_cli(capsys, "report", half)
    assert rc == 0, err
    assert (half / "report.html").exists() and "Traceback" not in err


def test_report_loads_in_headless_chromium(tiny_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make setup installs it with apt-get)")
    page = (tiny_run / "out" / "report.html").resolve()
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [
            browser,
            *flags,
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_img = text.count("<img ")
    assert n_img >= 10
    m = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert m and int(m.group(1)) == int(m.group(2)) == n_img, m and m.group(0)  # every image decoded
    assert not re.search(r"<body[^>]*data-errors", dom.stdout)  # no script error on the page
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower() or "uncaught" in line.lower()], console
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [browser, *flags, "--window-size=1280,4000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    from PIL import Image

    im = Image.open(shot)
    assert im.size == (1280, 4000)
    assert len(set(im.convert("L").resize((64, 200)).getdata())) > 20  # rendered content, not a blank page


def test_run_config_errors_name_the_key(tmp_path, capsys):
    cases = [
        ("name: x\nencoders: [{name: a, kind: features}]\n", "key 'data'"),
        ("data: {simulate: {preset: tiny}, store: x.zarr}\nencoders: [{name: a, kind: features}]\n", "exactly one of"),
        (
            "data: {simulate: {preset: tiny}}\nencoders: [{name: a, kind: features}, {name: a, kind: oracle}]\n",
            "unique",
        ),
        ("data: {store: x.zarr}\nencoders: [{name: o, kind: oracle}]\n", "oracle"),
        ("data: {simulate: {preset: tiny}}\nencoders: [{name: m, train: nope.yaml}]\n", "key 'encoders.0.train'"),
        ("data: {simulate: {preset: tiny}}\nencoders: [{name: m}]\n", "needs a train config"),
        (
            "data: {simulate: {preset: tiny}}\nencoders: [{name: f, kind: features}]\nmap: {align: magic}\n",
            "key 'map.align'",
        ),
        ("data: {simulate: {preset: tiny}}\nencoders: [{name: f, kind: features}]\ncolour: red\n", "key 'colour'"),
        ("data: {simulate: {preset: tiny}}\nencoders: [{name: 'a b', kind: features}]\n", "key 'encoders.0.name'"),
        (
            "data: {simulate: {preset: tiny}}\nencoders: [{name: f, kind: features}]\nbench: {metrics: [recall, nope]}\n",
            "key 'bench.metrics'",
        ),
    ]
    for i, (text, expected) in enumerate(cases):
        (tmp_path / f"c{i}.yaml").write_text(text)
        rc, _, err = run_cli(capsys, "run", tmp_path / f"c{i}.yaml", "--out", tmp_path / f"o{i}")
        assert_one_line_error(rc, err, expected)
        assert not (tmp_path / f"o{i}").exists()
    (tmp_path / "ok.yaml").write_text("data: {simulate: {preset: tiny}}\nencoders: [{name: f, kind: features}]\n")
    rc, _, err = run_cli(capsys, "run", tmp_path / "ok.yaml", "--out", tmp_path / "o", "--from", "painting")
    assert_one_line_error(rc, err, "--from")
    rc, _, err = run_cli(capsys, "report", tmp_path)
    assert_one_line_error(rc, err, "not a run folder")


def test_config_reference_is_current():
    from morphoscale.flow.reference import reference

    page = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"
    assert page.read_text() == reference(), (
        "regenerate: python -m morphoscale.flow.reference > docs/config-reference.md"
    )


def test_nucleus_crops_are_centred_and_mirrored_at_the_border():
    from morphoscale.bench.nuclei import nucleus_crops, pixel_features

    site = np.arange(3 * 50 * 60, dtype=np.float32).reshape(3, 50, 60)
    crops = nucleus_crops(site, np.array([[30.0, 20.0], [2.0, 48.0]]), 16)
    assert crops.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(crops[0, :, 8, 8], site[:, 20, 30])  # (x, y) centre lands in the middle
    np.testing.assert_array_equal(crops[1, :, 8, 8], site[:, 48, 2])
    np.testing.assert_array_equal(crops[1, 0, 8, 6], site[0, 48, 0])
    np.testing.assert_array_equal(crops[1, 0, 8, 5], site[0, 48, 1])  # mirrored, not wrapped
    assert pixel_features(crops, 4).shape == (2, 3 * 16)


def test_holdout_width_keeps_training_crops_off_the_right_side(sim_store, monkeypatch):
    import torch

    from morphoscale.data import datasets
    from morphoscale.data.datasets import CropDataset

    monkeypatch.setattr(datasets, "self_standardize", lambda x: x.float())  # see the pixel columns themselves
    ds = CropDataset(sim_store, 16, holdout_width=0.25)
    cols = np.broadcast_to(np.arange(64, dtype=np.float32), (1, 64, 64))
    right = [int(ds._crop(cols, 16, torch.Generator().manual_seed(i)).max()) for i in range(300)]
    assert max(right) == 47  # column 48 on (the right quarter) is never in a crop, and 47 is reached
    with pytest.raises(Exception, match="holdout_width"):
        CropDataset(sim_store, 60, holdout_width=0.25)


def test_real_field_run_probes_nucleus_features_and_reconstructs_held_out_crops(tmp_path, capsys, examples_dir):
    cfg = tmp_path / "jump.yaml"
    text = (Path(__file__).resolve().parents[1] / "configs" / "jump_pilot_field.yaml").read_text()
    cfg.write_text(
        text.replace("max_steps: 500", "max_steps: 3")
        .replace("batch_size: 32", "batch_size: 4")
        .replace("preview_every: 100", "preview_every: 3")
    )
    rc, stdout, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "run", "--quiet")
    assert rc == 0, err
    r2 = pd.read_csv(tmp_path / "run" / "probe" / "r2.csv")
    assert set(r2.embedding) == {"mae", "random_init", "raw pixels (16x16 block means)"} and r2.nuclei.iloc[0] == 109
    assert len(r2) == 3 * 5 and (r2.r2 <= 1).all()
    # the raw pixels of a crop centred on a nucleus do predict its area and DNA content
    pix = r2[r2.embedding.str.startswith("raw")].set_index("target").r2
    assert pix["AreaShape_Area (log)"] > 0.2 and pix["Intensity_IntegratedIntensity_DNA (log)"] > 0.2
    from PIL import Image

    im = Image.open(tmp_path / "run" / "probe" / "heldout_reconstructions_mae.png")
    assert im.height == 5 * 64  # one row per channel
    page = (tmp_path / "run" / "report.html").read_text()
    assert "predicting CellProfiler nucleus features" in page and "AreaShape_Area" in page
    assert "cross-validated R2" in stdout


def test_the_report_draws_paired_differences_against_training_flops(tmp_path):
    """Three or more encoders paired with one baseline, at different counted training FLOPs:
    the budget figure; fewer budgets: no figure."""
    import json

    import pandas as pd

    from morphoscale.report.sections import budget_section

    rows, encoders = [], {}
    for k, (name, flops) in enumerate([("a", 1e12), ("b", 4e12), ("c", 1.6e13)]):
        d = tmp_path / "encoders" / name / "train"
        d.mkdir(parents=True)
        (d / "resources.json").write_text(json.dumps({"training_flops": flops}))
        encoders[name] = d.parent
        for metric in ("decoding_r2", "truth_cosine_spearman", "recall/CORUM/5"):
            rows.append(
                {
                    "encoder": name,
                    "baseline": "twin",
                    "metric": metric,
                    "label": metric,
                    "a": 0.1,
                    "b": 0.1,
                    "difference": 0.01 * k,
                    "ci_low": 0.01 * k - 0.02,
                    "ci_high": 0.01 * k + 0.02,
                    "note": "",
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "paired.csv", index=False)
    html = budget_section(tmp_path, encoders)
    assert "Against the training budget" in html and html.count("<img") == 1
    two = pd.DataFrame(rows)
    two[two["encoder"] != "c"].to_csv(tmp_path / "paired.csv", index=False)
    assert budget_section(tmp_path, encoders) == ""


def test_report_tables_write_counts_as_counts():
    """A count column that is float only because a cell is missing reads 50, not 50.000;
    fractions keep their decimals, even where they happen to be 0 or 1."""
    import numpy as np
    import pandas as pd

    from morphoscale.report.elements import html_table as _table

    page = _table(pd.DataFrame({"n_pairs": [50.0, np.nan], "recall": [0.123, 1.0], "zero_or_one": [0.0, 1.0]}))
    assert "<td>50</td>" in page and "50.000" not in page and "<td>n/a</td>" in page
    assert "<td>0.123</td>" in page and "<td>0.000</td>" in page and "<td>1.000</td>" in page


def test_seeds_make_one_encoder_per_training_seed_paired_seed_by_seed():
    from pydantic import ValidationError

    from morphoscale.flow.config import RunConfig

    train = {"model": "mae_vit_tiny_patch8_64", "max_steps": 2}
    cfg = RunConfig.model_validate(
        {
            "data": {"simulate": {"preset": "tiny"}},
            "encoders": [
                {"name": "mae", "train": train, "seeds": [0, 1, 2], "baseline": "twin"},
                {"name": "twin", "train": {**train, "random_init": True}, "seeds": [2, 1, 0]},
                {"name": "features", "kind": "features"},
            ],
        }
    )
    e = {x.name: x for x in cfg.encoders}
    assert list(e) == ["mae-s0", "mae-s1", "mae-s2", "twin-s2", "twin-s1", "twin-s0", "features"]
    assert [e[f"mae-s{k}"].baseline for k in range(3)] == ["twin-s0", "twin-s1", "twin-s2"]
    assert e["mae-s1"].seed == 1 and e["mae-s1"].family == "mae" and e["twin-s0"].family == "twin"
    for bad, says in (
        (
            [
                {"name": "m", "train": train, "seeds": [0, 1], "baseline": "t"},
                {"name": "t", "train": train, "seeds": [0]},
            ],
            "seeds differ",
        ),
        ([{"name": "f", "kind": "features", "seeds": [0, 1]}], "seeds belong to kind model"),
        (
            [{"name": "m", "train": train, "baseline": "t"}, {"name": "t", "train": train, "seeds": [0, 1]}],
            "give this encoder the same seeds",
        ),
    ):
        with pytest.raises(ValidationError, match=says):
            RunConfig.model_validate({"data": {"simulate": {"preset": "tiny"}}, "encoders": bad})


def test_pooled_seeds_carry_the_spread_between_seeds_and_the_screens_own_error():
    from scipy.stats import t as student

    from morphoscale.bench.summary import PAIRED_COLUMNS, pool_seeds

    d, se = np.array([0.10, 0.04, 0.07]), np.array([0.02, 0.03, 0.025])
    t = pd.DataFrame(
        {
            "encoder": [f"mae-s{k}" for k in range(3)],
            "baseline": [f"twin-s{k}" for k in range(3)],
            "metric": "decoding_r2",
            "label": "decoding R2",
            "a": 0.3 + d,
            "b": 0.3,
            "difference": d,
            "ci_low": d - 1.96 * se,
            "ci_high": d + 1.96 * se,
            "se": se,
            "n_units": 39,
            "unit": "cluster of perturbations sharing a phenotype",
            "note": "",
        }
    )[PAIRED_COLUMNS]
    fam = {**{f"mae-s{k}": "mae" for k in range(3)}, **{f"twin-s{k}": "twin" for k in range(3)}}
    row = pool_seeds(t, fam).iloc[0]
    pooled_se = np.sqrt(d.var(ddof=1) / 3 + (se**2).mean())
    assert row.encoder == "mae (3 seeds)" and row.baseline == "twin" and row.difference == pytest.approx(d.mean())
    assert row.se == pytest.approx(pooled_se)
    assert row.ci_low == pytest.approx(d.mean() - student.ppf(0.975, 2) * pooled_se)
    assert "+0.100, +0.040, +0.070" in row.note
    assert pool_seeds(t.iloc[:1], fam).empty  # one seed pools nothing


def test_a_run_with_seeds_trains_each_pools_the_paired_differences_and_climbs_the_ladder(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(
        "data: {simulate: {preset: tiny, seed: 0}}\nworkers: 2\nencoders:\n"
        "  - {name: mae, seeds: [0, 1], baseline: twin, train: {model: mae_vit_tiny_patch8_64, "
        "model_overrides: {depth: 1}, max_steps: 2, batch_size: 4}}\n"
        "  - {name: twin, seeds: [0, 1], train: {model: mae_vit_tiny_patch8_64, model_overrides: {depth: 1}, "
        "random_init: true}}\n"
        "  - {name: features, kind: features}\n  - {name: oracle, kind: oracle}\n"
        "ladder: {untrained: twin-s0, features: features, oracle: oracle}\n"
        "bench: {quick: true, null_size: 200}\n"
    )
    rc, out_text, err = run_cli(capsys, "run", tmp_path / "s.yaml", "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    out = tmp_path / "out"
    w = {k: (out / "encoders" / f"twin-s{k}" / "train" / "model.ckpt").read_bytes() for k in (0, 1)}
    assert w[0] != w[1]  # the twin is re-drawn per seed
    p = pd.read_csv(out / "paired.csv")
    assert {"mae-s0", "mae-s1", "mae (2 seeds)"} <= set(p["encoder"])
    pooled = p[p["encoder"] == "mae (2 seeds)"]
    assert (pooled["baseline"] == "twin").all() and pooled["se"].notna().all()
    assert set(pooled["metric"]) == set(p[p["encoder"] == "mae-s0"]["metric"])
    lad = pd.read_csv(out / "ladder.csv")
    assert set(lad["encoder"]) == {"mae-s0", "mae-s1"}
    assert set(lad["rung"]) == {"twin", "strongest untrained", "features", "oracle fraction"}
    assert set(lad[lad["rung"] == "features"]["other"]) == {"features"}
    assert "mae-s0: " in out_text and "of the oracle's distance from random" in out_text
    assert "The ladder" in (out / "report.html").read_text()
    (tmp_path / "bad.yaml").write_text(
        (tmp_path / "s.yaml").read_text().replace("untrained: twin-s0", "untrained: twin")
    )
    rc, _, err = run_cli(capsys, "run", tmp_path / "bad.yaml", "--out", tmp_path / "bad")
    assert_one_line_error(rc, err, "ladder.untrained: 'twin' is not an encoder of the run")
