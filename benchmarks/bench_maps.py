"""Time and peak memory of TVN alignment + aggregation + relationship recall over the five
annotation sources (5/95 and 10/90, with the jackknife intervals), for maps of 1k, 5k and 17k
perturbations x 384 dims, and of efaar-benchmarking 1.0 doing the same work on the same
data in the same run (tvn_on_controls, aggregate, known_relationship_benchmark).

    .venv/bin/python benchmarks/bench_maps.py [--sizes 1000 5000 17000] [--no-reference]

Each (size, implementation) runs in a fresh process: peak RSS = ru_maxrss of that process,
imports included. Wells: 4 per perturbation in 8 batches plus 200 control wells per batch
(fewer than the 384 dimensions in no batch: 1,600 controls in all support every component).
Gene names are the real genes of the annotations (so pair counts are realistic), padded with
synthetic names when a size needs more. Both sides read the annotation files inside the
clock (efaar's benchmark reads and filters them on every call). Writes the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

D, REPS, N_BATCHES, CONTROLS_PER_BATCH = 384, 4, 8, 200


def make_wells(n: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    from morphoscale.bench.relationships import SOURCES, load_sources
    from morphoscale.data import examples

    sources = load_sources(examples.get("annotations"), SOURCES)
    real = sorted(set().union(*[set(p.entity1) | set(p.entity2) for p in sources.values()]))
    rng = np.random.default_rng(seed)
    genes = list(rng.permutation(real)[:n]) + [f"SYN{i}" for i in range(max(0, n - len(real)))]
    rows_pert = np.repeat(np.arange(n), REPS)
    effects = rng.normal(size=(n, D)).astype(np.float32)
    X_parts, obs_parts = [], []
    for b in range(N_BATCHES):
        sel = rows_pert[b::N_BATCHES]
        Xb = np.vstack(
            [
                effects[sel] + rng.normal(size=(len(sel), D)).astype(np.float32),
                rng.normal(size=(CONTROLS_PER_BATCH, D)).astype(np.float32),
            ]
        )
        X_parts.append(Xb * rng.uniform(0.5, 2, D).astype(np.float32) + rng.normal(0, 3, D).astype(np.float32))
        obs_parts.append(
            pd.DataFrame(
                {
                    "perturbation": [genes[i] for i in sel] + ["NTC"] * CONTROLS_PER_BATCH,
                    "perturbation_type": ["gene"] * len(sel) + ["control"] * CONTROLS_PER_BATCH,
                    "is_control": [False] * len(sel) + [True] * CONTROLS_PER_BATCH,
                    "batch": f"b{b}",
                }
            )
        )
    return np.vstack(X_parts), pd.concat(obs_parts, ignore_index=True)


def ours(n: int) -> dict:
    from morphoscale.bench.relationships import SOURCES, load_sources, recall_with_replicates
    from morphoscale.data import examples
    from morphoscale.maps.aggregate import aggregate
    from morphoscale.maps.align import TVN

    X, obs = make_wells(n)
    import scipy.sparse  # noqa: F401  (imports are not part of the timed work)
    import sklearn.decomposition  # noqa: F401

    t0 = time.perf_counter()
    Xa = TVN().fit_transform(X, obs["batch"].to_numpy(), obs["is_control"].to_numpy())
    t1 = time.perf_counter()
    P, pobs = aggregate(Xa, obs, "mean")
    t2 = time.perf_counter()
    keep = ~pobs["is_control"].to_numpy()
    rec, _ = recall_with_replicates(
        P[keep], pobs["perturbation"][keep].tolist(), load_sources(examples.get("annotations"), SOURCES)
    )
    t3 = time.perf_counter()
    r5 = rec[rec.lower == 5.0]
    return {
        "n": n,
        "wells": len(X),
        "align_s": t1 - t0,
        "aggregate_s": t2 - t1,
        "recall_s": t3 - t2,
        "total_s": t3 - t0,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pairs": int(r5["n_pairs"].sum()),
        "recall": {f"{r.source}/{r.lower:g}": [float(r.recall), int(r.n_pairs)] for r in rec.itertuples()},
        "corum": float(r5[r5.source == "CORUM"]["recall"].iloc[0]),
        "corum_ci": [
            float(r5[r5.source == "CORUM"]["ci_low"].iloc[0]),
            float(r5[r5.source == "CORUM"]["ci_high"].iloc[0]),
        ],
    }


def reference(n: int) -> dict:
    from morphoscale.bench.reference import load
    from morphoscale.data import examples

    ef, bm = load()
    ann = str(examples.get("annotations"))
    X, obs = make_wells(n)
    t0 = time.perf_counter()
    Xa = ef.tvn_on_controls(X, obs, "perturbation", "NTC", "batch")
    t1 = time.perf_counter()
    agg = ef.aggregate(Xa, obs, "perturbation", keys_to_remove=["NTC"])
    t2 = time.perf_counter()
    res = bm.known_relationship_benchmark(agg, "perturbation", benchmark_data_dir=ann)
    t3 = time.perf_counter()
    rec = {}
    for _, r in res.iterrows():
        rec[f"{r['source']}/5"] = [float(r["recall_0.05_0.95"]), int(r["query_distribution_size"])]
        rec[f"{r['source']}/10"] = [float(r["recall_0.1_0.9"]), int(r["query_distribution_size"])]
    return {
        "n": n,
        "align_s": t1 - t0,
        "aggregate_s": t2 - t1,
        "recall_s": t3 - t2,
        "total_s": t3 - t0,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "recall": rec,
    }


def run(n: int, impl: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", str(n), "--impl", impl], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{impl} at {n}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import warnings

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 17000])
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--one", type=int)
    ap.add_argument("--impl", default="morphoscale")
    args = ap.parse_args()
    if args.one:
        warnings.simplefilter("ignore")
        print(json.dumps((ours if args.impl == "morphoscale" else reference)(args.one)))
        return
    rows = []
    for n in args.sizes:
        a = run(n, "morphoscale")
        b = None if args.no_reference else run(n, "efaar")
        rows.append((a, b))
        print(a, b, flush=True)
    from _report import cpu_name, write_section

    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_maps.py --sizes {' '.join(map(str, args.sizes))}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}. Times exclude imports and include reading the "
        "five annotation files; peak memory is the whole process (Python, numpy, torch and the data). "
        "efaar-benchmarking 1.0 ran in the same "
        "run on the same wells (its tvn_on_controls, aggregate and known_relationship_benchmark).",
        "",
        "| perturbations x 384 | wells | TVN s | aggregate s | recall + intervals (5 sources, 5/95 and 10/90) s | "
        "total s | peak RSS MB | known pairs | "
        "CORUM recall [95% CI] | efaar 1.0 total s | efaar peak RSS MB | recalls equal to efaar's |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in rows:
        if b is not None:
            diffs = [abs(a["recall"][k][0] - b["recall"][k][0]) * a["recall"][k][1] for k in b["recall"]]
            same = (
                "all 10"
                if max(diffs) == 0
                else f"{sum(d == 0 for d in diffs)} of 10 (largest difference {max(diffs):.0f} pairs)"
            )
            ref = f"{b['total_s']:.2f} | {b['peak_mb']:.0f} | {same}"
        else:
            ref = "- | - | -"
        lines.append(
            f"| {a['n']} | {a['wells']} | {a['align_s']:.2f} | {a['aggregate_s']:.2f} | {a['recall_s']:.2f} | "
            f"{a['total_s']:.2f} | {a['peak_mb']:.0f} | "
            f"{a['pairs']} | {a['corum']:.3f} [{a['corum_ci'][0]:.3f}, {a['corum_ci'][1]:.3f}] | {ref} |"
        )
    write_section("maps", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
