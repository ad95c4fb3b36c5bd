"""The whole bench at genome scale, through the CLI: `morphoscale map`, then `morphoscale bench
--metrics recall` and `morphoscale bench` (every metric), end to end (imports included), with
each metric's time and peak resident memory from the bench's own summary.json "cost".

    .venv/bin/python benchmarks/bench_bench.py [--sizes 1000 5000 17000] [--compounds 50000] [--no-reference]

Wells are built like bench_maps.py's (384 dims, 4 wells per gene, 8 batches, 200 control wells
per batch), on 4 plates per batch (so nearly every gene has its own plate composition, the
magnitude null's worst case). The compound-scale case adds `--compounds` compounds of 2 wells
each to a 2,000-gene screen, each compound targeting 1 or 2 of the genes (compound-gene
retrieval and drug similarity run). The reference side by side: copairs 0.5's
`average_precision` + `mean_average_precision` for the two mAP metrics on the same aligned wells
and map (each in a fresh process, up to 5k genes: beyond that it needs more memory than the
machine has), with the largest difference of its mAP values from ours.
Writes the tables into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PLATES_PER_BATCH = 4
CLI = [sys.executable, "-m", "morphoscale"]
ORDER = [
    "read",
    "recall",
    "complexes",
    "map_consistency",
    "compound_gene",
    "drug_similarity",
    "consistency",
    "magnitude",
    "map_activity",
    "drug_vs_control",
    "umap",
]


def write_wells(n_genes: int, n_compounds: int, path: Path, seed: int = 0) -> Path | None:
    """The wells of the screen as an embeddings .h5ad; the compound targets CSV when there are compounds."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from bench_maps import CONTROLS_PER_BATCH, N_BATCHES, D, make_wells

    X, obs = make_wells(n_genes, seed)
    rng = np.random.default_rng(seed + 1)
    targets = None
    if n_compounds:
        genes = obs.loc[~obs["is_control"], "perturbation"].unique()
        effects = rng.normal(size=(n_compounds, D)).astype(np.float32)
        rows = np.repeat(np.arange(n_compounds), 2)
        Xc = effects[rows] + rng.normal(size=(len(rows), D)).astype(np.float32)
        oc = pd.DataFrame(
            {
                "perturbation": [f"CPD{i}" for i in rows],
                "perturbation_type": "compound",
                "is_control": False,
                "batch": [f"b{i % N_BATCHES}" for i in range(len(rows))],
            }
        )
        X, obs = np.vstack([X, Xc]), pd.concat([obs, oc], ignore_index=True)
        targets = path.with_suffix(".targets.csv")
        pd.DataFrame(
            [(f"CPD{i}", g) for i in range(n_compounds) for g in rng.choice(genes, rng.integers(1, 3), replace=False)],
            columns=["compound", "target"],
        ).to_csv(targets, index=False)
    obs["plate"] = obs["batch"].astype(str) + "_p" + rng.integers(0, PLATES_PER_BATCH, len(obs)).astype(str)
    obs.index = [f"w{i}" for i in range(len(obs))]
    assert (obs["is_control"].sum()) == CONTROLS_PER_BATCH * N_BATCHES
    ad.AnnData(X=X.astype(np.float32), obs=obs).write_h5ad(path)
    return targets


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))}: {out.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - t0


def copairs_side(map_path: Path) -> dict:
    """copairs 0.5 on the same wells and map, in this (fresh) process: time, peak memory, mAP values."""
    import resource

    import numpy as np
    import pandas as pd
    from copairs.map import average_precision, mean_average_precision

    from morphoscale.bench.complexes import read_complexes
    from morphoscale.bench.profiles import gene_profiles
    from morphoscale.bench.suite import read_map
    from morphoscale.data import examples
    from morphoscale.maps.build import read_embeddings, wells_path

    W = read_embeddings(wells_path(map_path))
    X, obs = np.asarray(W.X, dtype=np.float64), W.obs.reset_index(drop=True)
    G, genes = gene_profiles(read_map(map_path))
    complexes = read_complexes(examples.get("annotations") / "CORUM_clusters.tsv")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        meta = pd.DataFrame(
            {"perturbation": obs["perturbation"].astype(str).to_numpy(), "is_control": obs["is_control"].to_numpy(bool)}
        )
        meta["reference"] = np.where(meta["is_control"], np.arange(len(meta)), -1)
        ap = average_precision(
            meta, X, ["perturbation", "reference"], [], [], ["perturbation", "reference"], progress_bar=False
        )
        act = mean_average_precision(
            ap[~ap["is_control"]], ["perturbation"], 2000, 0.05, 0, progress_bar=False, cache_dir=cache
        )
        t1 = time.perf_counter()
        index = {g: i for i, g in enumerate(genes)}
        rows = pd.DataFrame(
            [(n, g) for n, m in complexes.items() for g in dict.fromkeys(m) if g in index], columns=["group", "gene"]
        )
        sizes = rows["group"].value_counts()
        rows = rows[rows["group"].isin(sizes.index[sizes >= 2])].reset_index(drop=True)
        ap = average_precision(
            rows, G[rows["gene"].map(index).to_numpy()], ["group"], ["gene"], [], ["group", "gene"], progress_bar=False
        )
        con = mean_average_precision(ap, ["group"], 2000, 0.05, 0, progress_bar=False, cache_dir=cache)
        t2 = time.perf_counter()
    return {
        "map_activity_s": t1 - t0,
        "map_consistency_s": t2 - t1,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "activity": dict(zip(act["perturbation"], act["mean_average_precision"])),
        "consistency": dict(zip(con["group"], con["mean_average_precision"])),
    }


def one_size(n_genes: int, n_compounds: int, folder: Path, reference: bool) -> dict:
    wells = folder / f"w{n_genes}_{n_compounds}.h5ad"
    targets = write_wells(n_genes, n_compounds, wells)
    m = folder / f"m{n_genes}_{n_compounds}.h5ad"
    row = {"genes": n_genes, "compounds": n_compounds}
    import anndata as ad

    row["wells"] = ad.read_h5ad(wells, backed="r").n_obs
    row["map_s"] = timed(CLI + ["map", "--embeddings", wells, "--out", m, "--overwrite"])
    extra = ["--compound-targets", targets] if targets else []
    row["recall_s"] = timed(
        CLI + ["bench", "--map", m, "--out", folder / "recall", "--metrics", "recall", "--overwrite", "--quiet"]
    )
    row["quick_s"] = timed(
        CLI + ["bench", "--map", m, "--out", folder / "quick", "--quick", "--overwrite", "--quiet"] + extra
    )
    row["bench_s"] = timed(CLI + ["bench", "--map", m, "--out", folder / "all", "--overwrite", "--quiet"] + extra)
    summary = json.loads((folder / "all" / "summary.json").read_text())
    row["cost"] = summary["cost"]
    row["skipped"] = {k: v["skipped"] for k, v in summary.items() if isinstance(v, dict) and "skipped" in v}
    if reference and not n_compounds and n_genes <= 5000:
        out = subprocess.run([sys.executable, __file__, "--copairs", str(m)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"copairs at {n_genes}: {out.stderr.strip().splitlines()[-1]}")
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        import pandas as pd

        diffs = []
        for key, file, col in (
            ("activity", "map_activity.csv", "perturbation"),
            ("consistency", "map_consistency.csv", "group"),
        ):
            ours = pd.read_csv(folder / "all" / file, dtype={col: str}).set_index(col)["mean_average_precision"]
            diffs.append(max(abs(ours[k] - v) for k, v in ref[key].items()))
        row["copairs"] = {
            "map_activity_s": ref["map_activity_s"],
            "map_consistency_s": ref["map_consistency_s"],
            "peak_mb": ref["peak_mb"],
            "max_map_difference": max(diffs),
        }
    return row


def table(rows: list[dict], args) -> str:
    from _report import cpu_name

    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_bench.py --sizes {' '.join(map(str, args.sizes))} --compounds {args.compounds}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}. Each command is a fresh "
        "process, timed end to end "
        "(imports, reading the map and writing the outputs included); the bench's peak is its process's resident high-water mark. "
        "Wells: 384 dims, 4 per gene, 8 batches of 4 plates, 200 control wells per batch (bench_maps.py's screen); the compound case adds "
        "2 wells per compound and a targets file.",
        "",
        "| genes | compounds | wells | `map` s | `bench --metrics recall` s | `bench --quick` s | `bench` (all) s | bench peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['genes']:,} | {r['compounds']:,} | {r['wells']:,} | {r['map_s']:.1f} | {r['recall_s']:.1f} | "
            f"{r['quick_s']:.1f} | {r['bench_s']:.1f} | "
            f"{r['cost']['total']['peak_rss_mb']:,.0f} |"
        )
    lines += [
        "",
        "Each metric inside `bench` (all): seconds / peak resident MB of the process while it ran (summary.json "
        '"cost"; `read`: reading the map and wells; '
        "the complex heatmap is counted with `complexes`, the recall figure with `recall`).",
        "",
    ]
    keys = [k for k in ORDER if any(k in r["cost"] for r in rows)]
    lines += ["| genes | compounds | " + " | ".join(keys) + " |", "|---:|---:|" + "---:|" * len(keys)]
    for r in rows:
        cells = [
            f"{r['cost'][k]['seconds']:.1f} / {r['cost'][k]['peak_rss_mb']:,.0f}" if k in r["cost"] else "-"
            for k in keys
        ]
        lines.append(f"| {r['genes']:,} | {r['compounds']:,} | " + " | ".join(cells) + " |")
    ref = [r for r in rows if "copairs" in r]
    if ref:
        lines += [
            "",
            "The two mAP metrics beside copairs 0.5 on the same aligned wells and map, in the same run (copairs' `average_precision` "
            "and `mean_average_precision`, null 2,000, a fresh process and cache each; ours with its default 10,000 "
            "draws): seconds, the copairs process's peak MB, and the largest "
            "difference between its mAP values and ours (p-values differ by the nulls' sampling only: "
            "tests/test_average_precision.py; a difference above 1e-12 is a near-tie between a positive and a negative "
            "cosine that the two computations round to different last bits).",
            "",
            "| genes | copairs activity s | ours s | copairs consistency s | ours s | copairs peak MB | largest mAP difference |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ref:
            c = r["copairs"]
            lines.append(
                f"| {r['genes']:,} | {c['map_activity_s']:.1f} | {r['cost']['map_activity']['seconds']:.1f} | "
                f"{c['map_consistency_s']:.1f} | "
                f"{r['cost']['map_consistency']['seconds']:.1f} | {c['peak_mb']:,.0f} | {c['max_map_difference']:.1e} |"
            )
    skipped = sorted({f"{k} ({v})" for r in rows for k, v in r["skipped"].items()})
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 17000])
    ap.add_argument("--compounds", type=int, default=50000, help="compounds of the compound-scale case (0: none)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--copairs", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.copairs:
        print(json.dumps(copairs_side(args.copairs)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(n, 0) for n in args.sizes] + ([(2000, args.compounds)] if args.compounds else [])
        for n, c in cases:
            folder = Path(tmp) / f"{n}_{c}"
            folder.mkdir()
            rows.append(one_size(n, c, folder, not args.no_reference))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "skipped"}), flush=True)
    from _report import write_section

    body = table(rows, args)
    write_section("bench at scale", body)
    print(body)


if __name__ == "__main__":
    main()
