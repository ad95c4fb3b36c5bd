"""Every aligner on the embeddings of a run's encoders: CORUM recall, decoding R2 of the true
well parameters and the cosine correlation with the true phenotypes, each with its 95%
interval. The default alignment is chosen with this on a second simulator seed
(configs/alignment_choice.yaml, seed 1) and on encoders nothing was trained for; the same
table on the demo's seed 0 is reported, not chosen on (docs/map.md).

    .venv/bin/morphoscale run configs/alignment_choice.yaml --out runs/alignment_seed1 --quiet
    .venv/bin/python benchmarks/alignment_choice.py runs/alignment_seed1 [--encoders oracle features random_init]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ALIGNERS = ("tvn", "tvn_per_batch", "sphering", "pca_center_scale", "center_scale", "none")


def score(run: Path, encoder: str, align: str) -> dict:
    import numpy as np

    from morphoscale.bench.profiles import gene_profiles
    from morphoscale.bench.relationships import HEADLINE, load_sources, recall_with_replicates
    from morphoscale.bench.truth import decoding_r2, truth_cosine_correlation
    from morphoscale.data import examples
    from morphoscale.maps.build import build_map, read_embeddings
    from morphoscale.simulate.oracle import read_truth

    emb = read_embeddings(run / "encoders" / encoder / "embeddings.h5ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m, wells = build_map(emb, align=align)
    G, genes = gene_profiles(m)
    rec, _ = recall_with_replicates(G, genes, load_sources(examples.get("annotations"), ("CORUM",)))
    r = rec[rec.lower == HEADLINE[0]].iloc[0]
    wells_truth, phen, params = read_truth(run / "screen" / "ground_truth")
    _, dec, _, _ = decoding_r2(np.asarray(wells.X), wells.obs.reset_index(drop=True), wells_truth, params)
    cos, _, _ = truth_cosine_correlation(G, genes, phen, params)
    return {
        "encoder": encoder,
        "align": align,
        "dims": m.n_vars,
        "warned": len(caught) > 0,
        "corum": r.recall,
        "corum_lo": r.ci_low,
        "corum_hi": r.ci_high,
        "random": r.random_recall,
        "r2": dec.value,
        "r2_lo": dec.ci_low,
        "r2_hi": dec.ci_high,
        "cos": cos.value,
        "cos_lo": cos.ci_low,
        "cos_hi": cos.ci_high,
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--encoders", nargs="+", default=["oracle", "features", "random_init"])
    ap.add_argument("--aligners", nargs="+", default=list(ALIGNERS))
    args = ap.parse_args()
    import pandas as pd

    rows = [score(args.run, e, a) for e in args.encoders for a in args.aligners]
    df = pd.DataFrame(rows)
    df.to_csv(args.run / "alignment_choice.csv", index=False)
    print(f"Command: `.venv/bin/python benchmarks/alignment_choice.py {args.run}`\n")
    print(
        "| encoder | align | dims | CORUM recall [95% CI] | decoding R2 [95% CI] | cosine correlation with the truth [95% CI] |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in df.itertuples():
        flag = " (warned)" if r.warned else ""
        print(
            f"| {r.encoder} | {r.align}{flag} | {r.dims} | {r.corum:.3f} [{r.corum_lo:.3f}, {r.corum_hi:.3f}] | "
            f"{r.r2:.3f} [{r.r2_lo:.3f}, {r.r2_hi:.3f}] "
            f"| {r.cos:.3f} [{r.cos_lo:.3f}, {r.cos_hi:.3f}] |"
        )
    print(f"\nrandom CORUM recall: {df['random'].iloc[0]:.3f}; random decoding R2 and cosine correlation: 0")


if __name__ == "__main__":
    main()
