"""Properties of a simulated screen that make it a fair test bed, measured, not assumed:
the oracle map recovers its known biology, and simple features need alignment to do so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..maps.align import DEFAULT_ALIGNER
from .biology import PARAMETERS


def oracle_embeddings(sim_dir: Path):
    """The oracle: each well's true morphology parameters, as a well-level AnnData."""
    import anndata as ad

    wells = pd.read_csv(Path(sim_dir) / "ground_truth" / "wells.csv")
    obs = pd.DataFrame({
        "perturbation": wells["perturbation"].astype(str),
        "perturbation_type": wells["perturbation_type"].astype(str),
        "is_control": wells["perturbation_type"].eq("control"),
        "batch": wells["experiment"].astype(str),
        "plate": wells["experiment"].astype(str) + "_" + wells["plate"].astype(str),
        "well": wells["well"].astype(str),
        "concentration": wells["concentration"],
    })
    obs.index = (obs["plate"] + "_" + obs["well"]).to_numpy()
    return ad.AnnData(X=wells[PARAMETERS].to_numpy(np.float32), obs=obs, uns={"provenance": {"embedding": "oracle"}})


def intensity_mean_embeddings(store_path: Path):
    """Per-channel mean intensity of each site, averaged to the well: the simplest image feature."""
    import anndata as ad

    from ..data.store import ImageStore

    store = ImageStore(store_path)
    feats = np.stack([store.read(i).reshape(len(store.channels), -1).mean(axis=1) for i in range(len(store))])
    sites = store.sites
    key = sites["plate"].astype(str) + "_" + sites["well"].astype(str)
    df = pd.DataFrame(feats, columns=store.channels)
    df["_key"] = key.to_numpy()
    X = df.groupby("_key", sort=False).mean()
    first = sites.assign(_key=key.to_numpy()).drop_duplicates("_key").set_index("_key").loc[X.index]
    obs = first[["perturbation", "perturbation_type", "is_control", "batch", "plate", "well"] + (["concentration"] if "concentration" in first else [])].copy()
    obs.index = X.index.astype(str)
    return ad.AnnData(X=X.to_numpy(np.float32), obs=obs, uns={"provenance": {"embedding": "intensity_means"}})


def corum_recall(emb, align: str) -> dict:
    from ..bench.relationships import HEADLINE, load_sources, relationship_recall
    from ..bench.run import gene_profiles
    from ..data import examples
    from ..maps.build import build_map

    m, _ = build_map(emb, align=align)
    G, genes = gene_profiles(m)
    rec = relationship_recall(G, genes, load_sources(examples.get("annotations"), ("CORUM",)))
    r = rec[rec.lower == HEADLINE[0]].iloc[0]
    return {"recall": float(r.recall), "n_pairs": int(r.n_pairs), "random": float(r.random_recall)}


def properties(sim_dir: Path, store_path: Path) -> pd.DataFrame:
    rows = []
    for name, emb in (("oracle", oracle_embeddings(sim_dir)), ("per-channel intensity means", intensity_mean_embeddings(store_path))):
        for align in ("none", DEFAULT_ALIGNER):
            rows.append({"embedding": name, "align": align, **corum_recall(emb, align)})
    return pd.DataFrame(rows)
