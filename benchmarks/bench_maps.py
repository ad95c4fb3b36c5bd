"""Time and peak memory of TVN alignment + aggregation + relationship recall over the five
annotation sources, for maps of 1k, 5k and 17k perturbations x 384 dims.

    .venv/bin/python benchmarks/bench_maps.py [--sizes 1000 5000 17000]

Each size runs in a fresh process (peak RSS = ru_maxrss of that process, imports
included). Wells: 4 per perturbation in 4 batches, plus 5% control wells per batch.
Gene names are the real genes of the annotations (so pair counts are realistic),
padded with synthetic names when a size needs more. Writes the table into BENCHMARKS.md.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(n: int, d: int = 384, reps: int = 4, n_batches: int = 4, seed: int = 0) -> dict:
    import numpy as np
    import pandas as pd

    from morphoscale.bench.relationships import SOURCES, load_sources, relationship_recall
    from morphoscale.data import examples
    from morphoscale.maps.aggregate import aggregate
    from morphoscale.maps.align import TVN

    ann = examples.get("annotations")
    sources = load_sources(ann, SOURCES)
    real = sorted(set().union(*[set(p.entity1) | set(p.entity2) for p in sources.values()]))
    rng = np.random.default_rng(seed)
    genes = list(rng.permutation(real)[:n]) + [f"SYN{i}" for i in range(max(0, n - len(real)))]
    n_ctrl = max(20, int(0.05 * n * reps / n_batches))
    rows_pert = np.repeat(np.arange(n), reps)
    effects = rng.normal(size=(n, d)).astype(np.float32)
    X_parts, obs_parts = [], []
    for b in range(n_batches):
        sel = rows_pert[b::n_batches]
        Xb = np.vstack([effects[sel] + rng.normal(size=(len(sel), d)).astype(np.float32), rng.normal(size=(n_ctrl, d)).astype(np.float32)])
        X_parts.append(Xb * rng.uniform(0.5, 2, d).astype(np.float32) + rng.normal(0, 3, d).astype(np.float32))
        obs_parts.append(pd.DataFrame({"perturbation": [genes[i] for i in sel] + ["NTC"] * n_ctrl, "perturbation_type": ["gene"] * len(sel) + ["control"] * n_ctrl,
                                       "is_control": [False] * len(sel) + [True] * n_ctrl, "batch": f"b{b}"}))
    X, obs = np.vstack(X_parts), pd.concat(obs_parts, ignore_index=True)
    import sklearn.decomposition  # noqa: F401  (imports are not part of the timed work)
    import scipy.sparse  # noqa: F401

    t0 = time.perf_counter()
    Xa = TVN().fit_transform(X, obs["batch"].to_numpy(), obs["is_control"].to_numpy())
    t1 = time.perf_counter()
    P, pobs = aggregate(Xa, obs, "mean")
    t2 = time.perf_counter()
    keep = ~pobs["is_control"].to_numpy()
    rec = relationship_recall(P[keep], pobs["perturbation"][keep].tolist(), sources)
    t3 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r5 = rec[rec.lower == 5.0]
    return {"n": n, "wells": len(X), "align_s": t1 - t0, "aggregate_s": t2 - t1, "recall_s": t3 - t2, "total_s": t3 - t0, "peak_mb": peak,
            "pairs": int(r5["n_pairs"].sum()), "recall_corum": float(r5[r5.source == "CORUM"]["recall"].iloc[0])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 17000])
    ap.add_argument("--one", type=int)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    from _report import cpu_name, write_section

    lines = [
        f"Command: `.venv/bin/python benchmarks/bench_maps.py --sizes {' '.join(map(str, args.sizes))}`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}. Times exclude imports; peak memory is the whole process (Python, numpy, torch and the data).",
        "",
        "| perturbations x 384 | wells | TVN s | aggregate s | recall (5 sources, 5/95 and 10/90) s | total s | peak RSS MB | known pairs in map |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['n']} | {r['wells']} | {r['align_s']:.2f} | {r['aggregate_s']:.2f} | {r['recall_s']:.2f} | {r['total_s']:.2f} | {r['peak_mb']:.0f} | {r['pairs']} |")
    write_section("maps", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
