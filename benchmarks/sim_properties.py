"""The simulator's properties on the demo preset, written into docs/simulator.md, and the
gallery of composite images per phenotype (docs/simulator_gallery.png).

    .venv/bin/python benchmarks/sim_properties.py [--seeds 0 1]

For each seed: simulate the demo screen, ingest it, and measure CORUM recall (5/95) of
the oracle map (every well's true morphology parameters) and of a map of per-channel
intensity means, each without alignment and after TVN.
"""

from __future__ import annotations

# isort: off
import morphoscale  # noqa: F401  (first: it pins the numeric libraries' kernels before numpy loads)

# isort: on
import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from _report import ROOT, write_section
from morphoscale.data.ingest import ingest, load_ingest_config
from morphoscale.maps import DEFAULT_ALIGNER
from morphoscale.simulate.biology import PARAMETERS
from morphoscale.simulate.oracle import oracle_embeddings
from morphoscale.simulate.render import CHANNELS, Optics, Renderer
from morphoscale.simulate.screen import simulate


def intensity_mean_embeddings(store_path: Path):
    """Per-channel mean intensity of each site, averaged to the well: the simplest image feature."""
    import anndata as ad

    from morphoscale.data.store import ImageStore

    store = ImageStore(store_path)
    feats = np.stack([store.read(i).reshape(len(store.channels), -1).mean(axis=1) for i in range(len(store))])
    sites = store.sites
    key = sites["plate"].astype(str) + "_" + sites["well"].astype(str)
    df = pd.DataFrame(feats, columns=store.channels)
    df["_key"] = key.to_numpy()
    X = df.groupby("_key", sort=False).mean()
    first = sites.assign(_key=key.to_numpy()).drop_duplicates("_key").set_index("_key").loc[X.index]
    obs = first[
        ["perturbation", "perturbation_type", "is_control", "batch", "plate", "well"]
        + (["concentration"] if "concentration" in first else [])
    ].copy()
    obs.index = X.index.astype(str)
    return ad.AnnData(X=X.to_numpy(np.float32), obs=obs, uns={"provenance": {"embedding": "intensity_means"}})


def corum_recall(emb, align: str) -> dict:
    from morphoscale.bench.profiles import gene_profiles
    from morphoscale.bench.relationships import HEADLINE, load_sources, relationship_recall
    from morphoscale.data import examples
    from morphoscale.maps.build import build_map

    m, _ = build_map(emb, align=align)
    G, genes = gene_profiles(m)
    rec = relationship_recall(G, genes, load_sources(examples.get("annotations"), ("CORUM",)))
    r = rec[rec.lower == HEADLINE[0]].iloc[0]
    return {"recall": float(r.recall), "n_pairs": int(r.n_pairs), "random": float(r.random_recall)}


def properties(sim_dir: Path, store_path: Path) -> pd.DataFrame:
    rows = []
    for name, emb in (
        ("oracle", oracle_embeddings(sim_dir)),
        ("per-channel intensity means", intensity_mean_embeddings(store_path)),
    ):
        for align in ("none", DEFAULT_ALIGNER):
            rows.append({"embedding": name, "align": align, **corum_recall(emb, align)})
    return pd.DataFrame(rows)


# the channel each parameter shows best in
SHOWN_IN = {
    "nucleus_area": "DNA",
    "nucleus_eccentricity": "DNA",
    "dna_texture": "DNA",
    "cell_area": "Actin",
    "cell_eccentricity": "Actin",
    "actin_density": "Actin",
    "actin_coherence": "Actin",
    "mito_fragmentation": "Mito",
    "er_intensity": "ER",
    "er_texture": "ER",
    "nucleoli_count": "RNA",
    "nucleoli_size": "RNA",
    "golgi_dispersion": "Golgi",
    "cell_count": "DNA",
    "multinucleation": "DNA",
}


def composite(img: np.ndarray) -> np.ndarray:
    """Three-colour view: DNA blue, Mito green, Actin red (each scaled to its 99.5th percentile)."""
    x = img[[2, 4, 0]].astype(float)
    x = x / np.maximum(np.percentile(x.reshape(3, -1), 99.5, axis=1), 1.0)[:, None, None]
    return np.clip(np.moveaxis(x, 0, -1), 0, 1)


def gallery(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = Renderer(128)
    optics = Optics(gain=np.ones(6), offset=np.full(6, 0.02), vignetting=0.1, focus_blur=0.2)
    values = (-2.5, 0.0, 2.5)
    fig, axes = plt.subplots(len(PARAMETERS), 4, figsize=(6.4, 1.75 * len(PARAMETERS)))
    for i, name in enumerate(PARAMETERS):
        ch = CHANNELS.index(SHOWN_IN[name])
        imgs = []
        for v in values:
            z = np.zeros(len(PARAMETERS))
            z[i] = v
            imgs.append(r.render(z, optics, np.random.default_rng([3, i])))
        top = max(np.percentile(im[ch], 99.7) for im in imgs)
        for j, im in enumerate(imgs):
            axes[i, j].imshow(im[ch], cmap="gray", vmin=0, vmax=top)
            axes[i, j].set_title(f"{SHOWN_IN[name]}, z = {values[j]:+.1f}", fontsize=6)
        axes[i, 3].imshow(composite(imgs[2]))
        axes[i, 3].set_title("z = +2.5, composite", fontsize=6)
        axes[i, 0].set_ylabel(name.replace("_", "\n"), fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "one morphology parameter at a time (same cells per row); composite: DNA blue, Mito green, Actin red",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--gallery-only", action="store_true")
    args = ap.parse_args()
    if args.gallery_only:
        gallery(ROOT / "docs" / "simulator_gallery.png")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            sim = simulate(Path(tmp) / f"demo{seed}", "demo", seed=seed, progress=False)
            store = ingest(
                load_ingest_config(None, {"format": "rxrx", "source": str(sim)}),
                Path(tmp) / f"demo{seed}.zarr",
                progress=False,
            )
            t = properties(sim, store)
            t.insert(0, "seed", seed)
            rows.append(t)
            print(t.to_string(), flush=True)
    import pandas as pd

    table = pd.concat(rows)
    lines = [
        f"Command: `.venv/bin/python benchmarks/sim_properties.py --seeds {' '.join(map(str, args.seeds))}` (demo preset).",
        "",
        "| seed | map | alignment | CORUM recall (5/95) | random | CORUM pairs in map |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.seed} | {r.embedding} | {r.align} | {r.recall:.3f} | {r.random:.2f} | {r.n_pairs} |")
    write_section("properties", "\n".join(lines), ROOT / "docs" / "simulator.md")
    gallery(ROOT / "docs" / "simulator_gallery.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
