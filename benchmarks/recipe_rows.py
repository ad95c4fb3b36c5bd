"""Lab-notebook rows (docs/recipe.md) for the encoders of a run folder: steps, wall time, the
learning check (loss against the trivial and interpolation levels), the probes at step 0 and
at the end, and the paired differences from the untrained twin with their intervals.

    .venv/bin/python benchmarks/recipe_rows.py runs/recipe_seed1 [--encoders mae mae_norm_pix]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

METRICS = (
    "decoding_r2",
    "truth_cosine_spearman",
    "recall/CORUM/5",
    "map_consistency/fraction_retrieved",
    "map_activity/fraction_retrieved",
)
SHORT = {
    "decoding_r2": "decoding R2",
    "truth_cosine_spearman": "cosine",
    "recall/CORUM/5": "CORUM",
    "map_consistency/fraction_retrieved": "mAP CORUM",
    "map_activity/fraction_retrieved": "mAP activity",
}


def row(run: Path, name: str, paired: pd.DataFrame) -> dict:
    t = run / "encoders" / name / "train"
    lc = json.loads((t / "learning_check.json").read_text())
    res = json.loads((t / "resources.json").read_text())
    m = pd.read_csv(t / "logs" / "metrics.csv")
    probes = m.dropna(subset=["probe/decoding_r2"]) if "probe/decoding_r2" in m else pd.DataFrame()
    out = {
        "encoder": name,
        "steps": lc["steps"],
        "wall_min": res["wall_seconds"] / 60,
        "verdict": lc["verdict"],
        "loss": f"{lc['first_loss']:.3f} -> {lc['final_loss']:.3f}",
        "interp": lc.get("interpolation_loss"),
        "trivial": lc.get("trivial_loss"),
    }
    if len(probes):
        out["probe_r2"] = f"{probes['probe/decoding_r2'].iloc[0]:.3f} -> {probes['probe/decoding_r2'].iloc[-1]:.3f}"
    p = paired[paired["encoder"] == name].set_index("metric")
    for k in METRICS:
        if k in p.index:
            r = p.loc[k]
            out[SHORT[k]] = f"{r['difference']:+.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--encoders", nargs="*")
    args = ap.parse_args()
    paired = pd.read_csv(args.run / "paired.csv")
    names = args.encoders or sorted(set(paired["encoder"]))
    rows = [row(args.run, n, paired) for n in names]
    cols = ["encoder", "steps", "wall_min", "verdict", "loss", "interp", "trivial", "probe_r2"] + [
        SHORT[k] for k in METRICS
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [
            f"{r[c]:.3f}"
            if isinstance(r.get(c), float) and c in ("interp", "trivial")
            else f"{r[c]:.1f}"
            if c == "wall_min"
            else str(r.get(c, "-"))
            for c in cols
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
