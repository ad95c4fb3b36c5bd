"""Known-relationship recall (CORUM, hu.MAP, Reactome, SIGNOR, StringDB, user pairs).

Cosine similarity between aggregated gene profiles; the null is every gene pair of
the map (upper triangle). A known pair is recalled when its cosine is at or below
the lower percentile of the null, or at or above the upper one (5/95 and 10/90 by
default; numpy.percentile's linear rule, exactly). Random recall is lo + (100 - hi)
percent, 0.10 at 5/95.

The null is never materialised: its percentiles are exact order statistics found in
two blocked passes (a histogram locates the bins holding the needed ranks, a second
pass gathers and sorts only those bins). Memory is O(n*d + block^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import InputError

SOURCES = ("CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB")
DEFAULT_THRESHOLDS = ((5.0, 95.0), (10.0, 90.0))
_N_BINS = 1 << 16
_LO_EDGE, _HI_EDGE = -1.0001, 1.0001


def normalize_rows(X, dtype=torch.float32) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(X), dtype=dtype)
    norms = t.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise InputError(f"{int((norms == 0).sum())} profiles are all zeros; cosine similarity is undefined for them")
    return t / norms


def _blocks(n: int, block: int):
    starts = list(range(0, n, block))
    for bi, i0 in enumerate(starts):
        for j0 in starts[bi:]:
            yield i0, min(i0 + block, n), j0, min(j0 + block, n)


def _upper_values(Xn: torch.Tensor, i0, i1, j0, j1) -> torch.Tensor:
    S = Xn[i0:i1] @ Xn[j0:j1].T
    if i0 == j0:
        r, c = torch.triu_indices(i1 - i0, j1 - j0, offset=1)
        return S[r, c]
    return S.reshape(-1)


def _bin_index(v: torch.Tensor) -> torch.Tensor:
    """Histogram bin of each value. Any monotone rule works (both passes use this one), so it
    runs in the values' own precision."""
    scale = _N_BINS / (_HI_EDGE - _LO_EDGE)
    return ((v - _LO_EDGE) * scale).clamp_(0, _N_BINS - 1).long()


def null_percentiles(X, percentiles, block: int = 2048, dtype=torch.float32) -> dict[float, float]:
    """Exact numpy.percentile(upper-triangle cosines, p) for each p, without the n x n matrix."""
    return _null_percentiles(normalize_rows(X, dtype), percentiles, block)


def _null_percentiles(Xn: torch.Tensor, percentiles, block: int) -> dict[float, float]:
    n = Xn.shape[0]
    m = n * (n - 1) // 2
    if m < 1:
        raise InputError(f"the map has {n} gene profile(s); at least 2 are needed for a null")
    ranks = {}
    for p in percentiles:
        pos = (m - 1) * (p / 100.0)
        k = int(np.floor(pos))
        ranks[p] = (k, min(k + 1, m - 1), pos - k)
    counts = torch.zeros(_N_BINS, dtype=torch.int64)
    for i0, i1, j0, j1 in _blocks(n, block):
        counts += torch.bincount(_bin_index(_upper_values(Xn, i0, i1, j0, j1)), minlength=_N_BINS)
    cum = torch.cumsum(counts, 0).numpy()
    needed = sorted({r for k, k1, _ in ranks.values() for r in (k, k1)})
    bin_of = {r: int(np.searchsorted(cum, r, side="right")) for r in needed}
    wanted = torch.zeros(_N_BINS, dtype=torch.bool)
    wanted[list(set(bin_of.values()))] = True
    gathered: dict[int, list[torch.Tensor]] = {b: [] for b in set(bin_of.values())}
    for i0, i1, j0, j1 in _blocks(n, block):
        v = _upper_values(Xn, i0, i1, j0, j1)
        idx = _bin_index(v)
        sel = wanted[idx]
        if sel.any():
            vs, bs = v[sel], idx[sel]
            for b in gathered:
                gathered[b].append(vs[bs == b])
    sorted_bins = {b: torch.sort(torch.cat(vals).double()).values.numpy() for b, vals in gathered.items()}

    def value(r: int) -> float:
        b = bin_of[r]
        below = cum[b - 1] if b > 0 else 0
        return float(sorted_bins[b][r - below])

    return {p: value(k) + (value(k1) - value(k)) * frac for p, (k, k1, frac) in ranks.items()}


def read_pairs(path: Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise InputError(f"{path}: annotation file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot parse as entity1,entity2 CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("entity1", "entity2") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (expected entity1,entity2)")
    return df[["entity1", "entity2"]].dropna()


def pair_indices(pairs: pd.DataFrame, genes: list[str]) -> np.ndarray:
    """Undirected, deduplicated, no self pairs, both genes in the map: (k, 2) indices, i < j."""
    index = {g: i for i, g in enumerate(genes)}
    a = pairs["entity1"].map(index)
    b = pairs["entity2"].map(index)
    ok = a.notna() & b.notna()
    a, b = a[ok].astype(np.int64).to_numpy(), b[ok].astype(np.int64).to_numpy()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    return np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0) if keep.any() else np.zeros((0, 2), np.int64)


def pair_cosines(Xn: torch.Tensor, idx: np.ndarray) -> np.ndarray:
    """Cosines of the given pairs of rows of the row-normalized Xn."""
    out = np.empty(len(idx))
    for s in range(0, len(idx), 65536):
        a = torch.as_tensor(idx[s : s + 65536, 0])
        b = torch.as_tensor(idx[s : s + 65536, 1])
        out[s : s + 65536] = (Xn[a] * Xn[b]).sum(dim=1).double().numpy()
    return out


@dataclass
class RecallResult:
    source: str
    lower: float
    upper: float
    recall: float
    n_pairs: int
    n_genes: int
    random_recall: float
    lower_threshold: float
    upper_threshold: float


def relationship_recall(
    X,
    genes: list[str],
    sources: dict[str, pd.DataFrame],
    thresholds=DEFAULT_THRESHOLDS,
    block: int = 2048,
    dtype=torch.float32,
) -> pd.DataFrame:
    """Recall of every source at every (lower, upper) percentile pair, as a tidy table."""
    if len(genes) != len(set(genes)):
        dup = pd.Series(genes)[pd.Series(genes).duplicated()].iloc[0]
        raise InputError(f"gene '{dup}' has several profiles in the map; aggregate first")
    percentiles = sorted({p for pair in thresholds for p in pair})
    Xn = normalize_rows(X, dtype)  # once, for the null and for every source
    cuts = _null_percentiles(Xn, percentiles, block)
    rows = []
    for name, pairs in sources.items():
        idx = pair_indices(pairs, genes)
        cos = pair_cosines(Xn, idx) if len(idx) else np.zeros(0)
        n_genes = len(np.unique(idx)) if len(idx) else 0
        # A pair whose cosine is the order statistic a cut lands on counts as at the cut; the
        # null comes from a matrix product and the pairs from row products, which round
        # differently, so "at" means within a few units of the last place.
        tol = 4 * torch.finfo(Xn.dtype).eps
        for lo, hi in thresholds:
            hit = (cos <= cuts[lo] + tol) | (cos >= cuts[hi] - tol)
            rows.append(RecallResult(name, lo, hi, float(hit.mean()) if len(idx) else float("nan"), int(len(idx)), n_genes, (lo + 100 - hi) / 100, cuts[lo], cuts[hi]).__dict__)
    return pd.DataFrame(rows)


def load_sources(annotation_dir: Path, names=SOURCES, extra: dict[str, Path] | None = None) -> dict[str, pd.DataFrame]:
    out = {name: read_pairs(Path(annotation_dir) / f"{name}.txt") for name in names}
    for name, path in (extra or {}).items():
        out[name] = read_pairs(path)
    return out
