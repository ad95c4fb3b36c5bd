"""The tables of docs/demo.md, in Markdown, from a run folder: recall per encoder and source,
every other headline metric, and the paired differences, each with its 95% interval.

    .venv/bin/python benchmarks/demo_tables.py runs/demo
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
from pathlib import Path

import pandas as pd
import yaml


def main() -> None:
    from morphoscale.bench import summary

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    names = [e["name"] for e in yaml.safe_load((args.run / "run.yaml").read_text())["encoders"]]
    res = summary.run_results(args.run, names)
    names = [n for n in names if n in res]
    rec = summary.recall_table(res)
    sources = list(dict.fromkeys(rec["source"]))
    print("| encoder | " + " | ".join(sources) + " |\n|---|" + "---:|" * len(sources))
    for n in names:
        r = rec[rec.encoder == n].set_index("source")
        print(
            f"| {n} | "
            + " | ".join(summary.fmt(r.loc[s, "recall"], r.loc[s, "ci_low"], r.loc[s, "ci_high"]) for s in sources)
            + " |"
        )
    rnd = rec.groupby("source", sort=False)["random"].first()
    pairs = rec.groupby("source", sort=False)["n_pairs"].first()
    print("| random | " + " | ".join(f"{rnd[s]:.3f}" for s in sources) + " |")
    print("| pairs in the map | " + " | ".join(str(pairs[s]) for s in sources) + " |\n")
    t = summary.headline_table(res)
    t = t[~t["metric"].str.startswith("recall/")]
    print("| metric | " + " | ".join(names) + " | random |\n|---|" + "---:|" * (len(names) + 1))
    for label in dict.fromkeys(t["label"]):
        cells = []
        for n in names:
            r = t[(t.label == label) & (t.encoder == n)]
            cells.append(summary.fmt(r.value.iloc[0], r.ci_low.iloc[0], r.ci_high.iloc[0]) if len(r) else "n/a")
        rnd = t[t.label == label]["random"].dropna()
        print(f"| {label} | " + " | ".join(cells) + (f" | {rnd.iloc[0]:.3f} |" if len(rnd) else " | |"))
    p = pd.read_csv(args.run / "paired.csv") if (args.run / "paired.csv").exists() else pd.DataFrame()
    if len(p):
        print(
            "\n| encoder - baseline | metric | encoder | baseline | difference [95% CI] | |\n|---|---|---:|---:|---:|---|"
        )
        for r in p.itertuples():
            print(
                f"| {r.encoder} - {r.baseline} | {r.label} | {r.a:.3f} | {r.b:.3f} | "
                f"{summary.fmt(r.difference, r.ci_low, r.ci_high)} | {r.note} |"
            )


if __name__ == "__main__":
    main()
