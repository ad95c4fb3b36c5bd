"""Are the intervals calibrated? Independent simulated screens, scored by encoders that need no
training, against the jackknife's own standard errors.

    .venv/bin/python benchmarks/interval_calibration.py [--seeds 0 19] [--out runs/calibration] [--write]

For each simulator seed (the demo preset: 103-odd genes, 3 batches; the tiny one is too small
for the features to score) `morphoscale run` makes the screen and scores four encoders that
cost nothing to train: the untrained ViT-Ti/8 (configs/random_init.yaml), the untrained MIDL
CNN (configs/wsl_random_init.yaml), the hand-crafted features and the oracle. Each seed's
run folder is kept (runs resume: a killed study goes on where it stopped). From every finished
seed, for each headline metric of each encoder and each paired difference (CNN - ViT,
features - ViT, features - CNN, oracle - features):

- the across-seed mean and standard deviation (SD: the spread the interval should describe,
  since a new screen re-draws the genes, complexes and wells; its 95% interval from the
  chi-square on n - 1 degrees of freedom);
- the mean jackknife SE over seeds, and SE / SD with the interval the SD's gives it
  (1 is calibrated; below 1 the intervals are too narrow, above too wide);
- the coverage: the fraction of seeds whose 95% interval holds the across-seed mean (the
  truth stand-in), with its Wilson interval.

--write puts the table into docs/bench.md between its calibration markers. Each seed takes
several minutes on 2 cores; run it in the background and commit the table as seeds finish.
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from _report import ROOT, cpu_name, write_section
from morphoscale.bench.intervals import wilson
from morphoscale.bench.summary import headline_metrics, paired, read

ENCODERS = {
    "vit_untrained": "configs/random_init.yaml",
    "cnn_untrained": "configs/wsl_random_init.yaml",
}
PAIRS = [
    ("cnn_untrained", "vit_untrained"),
    ("features", "vit_untrained"),
    ("features", "cnn_untrained"),
    ("oracle", "features"),
]


def run_config(seed: int) -> str:
    models = "".join(f"  - {{name: {n}, train: {ROOT / p}}}\n" for n, p in ENCODERS.items())
    return (
        f"name: calibration_s{seed}\ndata:\n  simulate: {{preset: demo, seed: {seed}}}\nencoders:\n{models}"
        "  - {name: features, kind: features}\n  - {name: oracle, kind: oracle}\n"
        "map: {align: tvn_per_batch, aggregate: mean}\n"
    )


def run_seed(out: Path, seed: int) -> Path:
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / f"seed{seed}.yaml").write_text(run_config(seed))
    cmd = [
        sys.executable,
        "-m",
        "morphoscale",
        "run",
        str(folder.parent / f"seed{seed}.yaml"),
        "--out",
        str(folder),
        "--quiet",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return folder


def seed_rows(folder: Path, seed: int) -> list[dict]:
    """Every headline estimate of every encoder and paired difference of one seed's run."""
    res = {n: read(folder / "encoders" / n / "bench") for n in [*ENCODERS, "features", "oracle"]}
    rows = []
    for name, r in res.items():
        for h in headline_metrics():
            e = r.estimates.get(h.metric)
            if e is not None and np.isfinite(e.get("se", np.nan)):
                rows.append({"seed": seed, "what": name, "metric": h.label, **_est(e)})
    for a, b in PAIRS:
        for _, p in paired(res[a], res[b]).iterrows():
            if np.isfinite(p["se"]):
                rows.append(
                    {
                        "seed": seed,
                        "what": f"{a} - {b}",
                        "metric": p["label"],
                        "value": p["difference"],
                        "se": p["se"],
                        "ci_low": p["ci_low"],
                        "ci_high": p["ci_high"],
                        "n_units": p["n_units"],
                        "unit": p["unit"],
                    }
                )
    return rows


def _est(e: dict) -> dict:
    keys = ("value", "se", "ci_low", "ci_high", "n_units")
    return {**{k: e[k] for k in keys}, "unit": e.get("unit", "")}


def calibration(rows: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import chi2

    out = []
    for (what, metric), g in rows.groupby(["what", "metric"], sort=False):
        n = len(g)
        if n < 3:
            continue
        mean, sd = g["value"].mean(), g["value"].std(ddof=1)
        sd_lo, sd_hi = sd * np.sqrt((n - 1) / chi2.ppf(0.975, n - 1)), sd * np.sqrt((n - 1) / chi2.ppf(0.025, n - 1))
        se = g["se"].mean()
        hit = int(((g["ci_low"] <= mean) & (mean <= g["ci_high"])).sum())
        lo, hi = wilson(hit, n)
        out.append(
            {
                "what": what,
                "metric": metric,
                "seeds": n,
                "mean": mean,
                "SD across seeds [95% CI]": f"{sd:.4f} [{sd_lo:.4f}, {sd_hi:.4f}]",
                "mean SE": se,
                "SE / SD [95% CI]": f"{se / sd:.2f} [{se / sd_hi:.2f}, {se / sd_lo:.2f}]" if sd > 0 else "",
                "coverage [95% CI]": f"{hit}/{n} [{lo:.2f}, {hi:.2f}]",
                "units": f"{g['n_units'].median():.0f} {str(g['unit'].iloc[0]).split(' ')[0] or 'unit'}s",
            }
        )
    return pd.DataFrame(out)


def markdown(t: pd.DataFrame) -> str:
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 19], metavar=("FIRST", "LAST"))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "calibration")
    ap.add_argument("--write", action="store_true", help="put the table into docs/bench.md")
    ap.add_argument("--finished-only", action="store_true", help="tabulate the seeds already run, run none")
    args = ap.parse_args()
    rows = []
    for seed in range(args.seeds[0], args.seeds[1] + 1):
        folder = args.out / f"seed{seed}"
        if args.finished_only and not (folder / "report.html").exists():
            continue
        if not args.finished_only:
            run_seed(args.out, seed)
        rows += seed_rows(folder, seed)
        pd.DataFrame(rows).to_csv(args.out / "estimates.csv", index=False)
        table = calibration(pd.DataFrame(rows))
        body = (
            f"Command: `.venv/bin/python benchmarks/interval_calibration.py --seeds {args.seeds[0]} {args.seeds[1]} --write`"
            f" ({len({r['seed'] for r in rows})} of {args.seeds[1] - args.seeds[0] + 1} seeds finished). "
            f"Machine: {cpu_name()}, "
            f"2 cores.\n\n" + markdown(table)
        )
        print(body, flush=True)
        if args.write:
            write_section("calibration", body, ROOT / "docs" / "bench.md")


if __name__ == "__main__":
    main()
