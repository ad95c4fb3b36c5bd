"""Which readout keeps the signal: each model family's checkpoints, trained and untrained,
re-embedded at several layers and poolings and scored against the simulated truth (decoding
R2, cosine correlation with the true phenotypes), CORUM recall and mAP activity, each with
its 95% interval, and the trained model's paired difference from its untrained twin at the
same readout. Choices are made on simulator seed 1 (configs/readout_choice.yaml), never on
the screen that is reported (docs/embed.md).

    .venv/bin/morphoscale run configs/readout_choice.yaml --out runs/readout_seed1 --quiet
    .venv/bin/python benchmarks/readout_choice.py runs/readout_seed1

Any run's ViT MAEs: `--pair TRAINED:UNTRAINED` (repeatable) reads each pair at the ViT
readouts (the recipe study's readout of each budget, docs/recipe.md).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

# model family -> (trained encoder, untrained twin, readouts as (layer, pooling)); the run
# itself embeds each encoder at (-1, mean), the default
FAMILIES = {
    "ViT-Ti/8 MAE": ("mae", "random_init", [(-1, "mean"), (-1, "cls"), (5, "mean")]),
    "MIDL CNN (WSL)": ("wsl", "wsl_random_init", [(-1, "mean"), (-1, "concat"), (-1, "flatten")]),
    "MU-Net small": ("mu_net", "mu_net_random_init", [(-1, "mean"), (-1, "concat"), (2, "mean")]),
}
METRICS = {
    "decoding_r2": "decoding R2",
    "truth_cosine_spearman": "cosine correlation with the truth",
    "recall/CORUM/5": "CORUM recall",
    "map_activity/fraction_retrieved": "mAP activity: fraction retrieved",
}


def readout_bench(run: Path, encoder: str, layer: int, pooling: str) -> Path:
    """encoders/<encoder>/readouts/<layer>_<pooling>/bench of the run (the default readout: the run's own)."""
    from morphoscale.bench.suite import run_bench
    from morphoscale.embed import embed
    from morphoscale.maps.build import build_map, read_embeddings, write_h5ad

    enc = run / "encoders" / encoder
    if (layer, pooling) == (-1, "mean"):
        return enc / "bench"
    folder = enc / "readouts" / f"{layer}_{pooling}"
    if (folder / "bench" / "summary.json").exists():
        return folder / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    emb = embed(
        enc / "train" / "model.ckpt",
        run / "store.zarr",
        folder / "embeddings.h5ad",
        layer=layer,
        pooling=pooling,
        overwrite=True,
        progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m, wells = build_map(read_embeddings(emb), align="tvn_per_batch", method="mean")
    write_h5ad(wells, folder / "map.wells.h5ad", overwrite=True)
    write_h5ad(m, folder / "map.h5ad", overwrite=True)
    gt = run / "screen" / "ground_truth"
    run_bench(
        folder / "map.h5ad",
        folder / "bench",
        raw=emb,
        compound_targets=gt / "compound_targets.csv",
        overwrite=True,
        truth=gt,
    )
    return folder / "bench"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument(
        "--pair", action="append", default=[], help="TRAINED:UNTRAINED encoders of the run, read at the ViT readouts"
    )
    args = ap.parse_args()
    import pandas as pd

    from morphoscale.bench import summary

    families = FAMILIES
    if args.pair:
        vit = FAMILIES["ViT-Ti/8 MAE"][2]
        families = {p.split(":")[0]: (p.split(":")[0], p.split(":")[1], vit) for p in args.pair}
    rows = []
    for family, (trained, untrained, readouts) in families.items():
        for layer, pooling in readouts:
            a, b = (summary.read(readout_bench(args.run, e, layer, pooling)) for e in (trained, untrained))
            p = summary.paired(a, b).set_index("metric")
            for key, label in METRICS.items():
                if key not in p.index:
                    continue
                r, ea, eb = p.loc[key], a.estimates[key], b.estimates[key]
                rows.append(
                    {
                        "family": family,
                        "layer": layer,
                        "pooling": pooling,
                        "metric": label,
                        "trained": summary.fmt(ea["value"], ea["ci_low"], ea["ci_high"]),
                        "untrained": summary.fmt(eb["value"], eb["ci_low"], eb["ci_high"]),
                        "difference": summary.fmt(r.difference, r.ci_low, r.ci_high),
                        "note": r.note,
                    }
                )
    df = pd.DataFrame(rows)
    df.to_csv(args.run / ("readout_pairs.csv" if args.pair else "readout_choice.csv"), index=False)
    pairs = "".join(f" --pair {p}" for p in args.pair)
    print(f"Command: `.venv/bin/python benchmarks/readout_choice.py {args.run}{pairs}`\n")
    print(
        "| model | layer | pooling | metric | trained [95% CI] | untrained [95% CI] | trained - untrained, paired [95% CI] | |"
    )
    print("|---|---:|---|---|---:|---:|---:|---|")
    for r in df.itertuples():
        print(
            f"| {r.family} | {r.layer} | {r.pooling} | {r.metric} | {r.trained} | {r.untrained} | {r.difference} | {r.note} |"
        )


if __name__ == "__main__":
    main()
