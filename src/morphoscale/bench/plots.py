"""Figures for the report: recall per source with the random line, cosine heatmap of the
best-recovered complexes, UMAP of wells coloured by batch before and after alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recall_bars(recall: pd.DataFrame, path: Path, lower: float | None = None) -> Path:
    from .relationships import HEADLINE

    lower = HEADLINE[0] if lower is None else lower
    plt = _plt()
    r = recall[recall["lower"] == lower]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(r["source"], r["recall"], color="#3b7dd8")
    ax.axhline(r["random_recall"].iloc[0], color="crimson", ls="--", label=f"random ({r['random_recall'].iloc[0]:.2f})")
    for x, (v, n) in enumerate(zip(r["recall"], r["n_pairs"])):
        ax.text(x, v + 0.005, f"{v:.2f}\n{n} pairs", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"recall ({lower:g}% / {100 - lower:g}%)")
    ax.set_ylim(0, max(0.3, float(np.nanmax(r["recall"])) * 1.3 if len(r) else 0.3))
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def complex_heatmap(
    X: np.ndarray, genes: list[str], complexes: dict[str, list[str]], ks: pd.DataFrame, path: Path, top: int = 4
) -> Path | None:
    plt = _plt()
    if ks is None or not len(ks):
        return None
    best = ks.sort_values("ks_statistic", ascending=False).head(top)
    index = {g: i for i, g in enumerate(genes)}
    order, bounds = [], []
    for name in best["complex"]:
        members = [g for g in complexes[name] if g in index and g not in order]
        order += members
        bounds.append((name, len(order)))
    U = np.asarray(X, dtype=np.float64)[[index[g] for g in order]]
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(U @ U.T, cmap="RdBu_r", vmin=-1, vmax=1)
    for _, b in bounds[:-1]:
        ax.axhline(b - 0.5, color="k", lw=0.8)
        ax.axvline(b - 0.5, color="k", lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("cosine similarity, best-recovered complexes:\n" + "\n".join(n[:60] for n, _ in bounds), fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def umap_by_batch(
    before: np.ndarray, after: np.ndarray, batch: np.ndarray, path: Path, seed: int = 0, max_points: int = 5000
) -> Path:
    import umap

    plt = _plt()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(batch), min(len(batch), max_points), replace=False)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    batches = sorted(set(batch[idx]))
    colors = plt.get_cmap("tab10" if len(batches) <= 10 else "tab20")
    for ax, X, title in ((axes[0], before, "before alignment"), (axes[1], after, "after alignment")):
        emb = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(np.asarray(X)[idx])
        for k, b in enumerate(batches):
            sel = batch[idx] == b
            ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=colors(k % colors.N), label=str(b))
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(markerscale=3, fontsize=7, frameon=False, bbox_to_anchor=(1, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
