"""Do two run folders hold the same numbers? recall.csv, paired.csv, every encoder's bench
estimates (summary.json) and embeddings (X), compared exactly; what differs is listed.

    .venv/bin/python benchmarks/compare_runs.py RUN_A RUN_B

Used to check that a change which should not touch the results (a refactor) does not:
`make demo` before and after, then this. Exit code 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd


def differences(a: Path, b: Path) -> list[str]:
    out = []
    for name in ("recall.csv", "paired.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        if not x.equals(y):
            out.append(f"{name} differs")
    for s in sorted((a / "encoders").glob("*/bench/summary.json")):
        t = b / s.relative_to(a)
        ea, eb = json.loads(s.read_text())["estimates"], json.loads(t.read_text())["estimates"]
        out += [
            f"{s.parent.parent.name}: estimate {k} differs" for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)
        ]
    for e in sorted((a / "encoders").glob("*/embeddings.h5ad")):
        if not np.array_equal(ad.read_h5ad(e).X, ad.read_h5ad(b / e.relative_to(a)).X):
            out.append(f"{e.parent.name}: embeddings differ")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = p.parse_args()
    found = differences(args.a, args.b)
    n = sum(len(json.loads(s.read_text())["estimates"]) for s in (args.a / "encoders").glob("*/bench/summary.json"))
    print("\n".join(found) or f"identical: recall.csv, paired.csv, {n} bench estimates and every encoder's embeddings")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
