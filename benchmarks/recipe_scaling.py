"""The scaling grid of the recipe study (#33, docs/recipe.md): one recipe at several training
budgets, each paired with the one untrained twin, against counted training FLOPs. Writes the
figure (the same one the run's report draws) and prints the table.

    .venv/bin/python benchmarks/recipe_scaling.py runs/recipe_seed1 --twin random_init \\
        --encoders mae_norm_pix_150 mae_norm_pix_300 mae_norm_pix mae_norm_pix_1500 mae_norm_pix_2400 \\
        --figure docs/figures/recipe_scaling_seed1.png
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import json
from pathlib import Path

import pandas as pd


def main() -> None:
    from morphoscale.report.sections import BUDGET_METRICS, budget_figure, training_flops

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--twin", default="random_init")
    ap.add_argument("--encoders", nargs="+", required=True)
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()
    paired = pd.read_csv(args.run / "paired.csv")
    flops = {n: training_flops(args.run / "encoders" / n) for n in args.encoders}
    if args.figure:
        fig = budget_figure(paired, flops, args.twin)
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110, bbox_inches="tight")
    cols = ["encoder", "steps", "training TFLOP", "wall min"] + list(BUDGET_METRICS.values())
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for n in sorted(args.encoders, key=lambda n: flops[n]):
        res = json.loads((args.run / "encoders" / n / "train" / "resources.json").read_text())
        p = paired[(paired["encoder"] == n) & (paired["baseline"] == args.twin)].set_index("metric")
        cells = [n, str(res["optimizer_steps"]), f"{flops[n] / 1e12:,.0f}", f"{res['wall_seconds'] / 60:.1f}"]
        for m in BUDGET_METRICS:
            cells.append(
                f"{p.loc[m, 'difference']:+.3f} [{p.loc[m, 'ci_low']:.3f}, {p.loc[m, 'ci_high']:.3f}]"
                if m in p.index
                else "-"
            )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
