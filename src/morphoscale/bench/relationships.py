"""Known-relationship recall (CORUM, hu.MAP, Reactome, SIGNOR, StringDB, user pairs).

Cosine similarity between aggregated gene profiles; the null is every gene pair of the
map (upper triangle). efaar-benchmarking 1.0's rule, exactly: with the null sorted, a known
pair of cosine q is recalled at (lo, hi) when searchsorted(null, q, 'right') / m <= lo or
searchsorted(null, q, 'left') / m >= hi (m = null size). Both conditions are thresholds on
two order statistics of the null: count(null <= q) <= K  <=>  q < v[K], and
count(null < q) >= L  <=>  q > v[L-1], with K the largest and L the smallest count that
passes the division. Random recall is (K + m - L) / m, about lo + 1 - hi.

The null is never materialised: its order statistics are found exactly in two blocked
passes (a histogram locates the bins holding the needed ranks, a second pass gathers and
sorts only those bins), and each known pair's cosine is taken from the very block product
that put it in the null, so a pair compares with the null as efaar's one matrix does.
Memory is O(n*d + block^2).

Every recall carries a 95% interval from a delete-a-group jackknife with the null's cuts
held: a source's pairs cluster by gene and by complex or pathway, so a per-pair binomial
interval, and even a delete-one-gene jackknife, is too narrow. The groups (bench/clusters.py
`pair_groups`) cut as few of the source's pairs as possible; leaving one out removes every
pair that touches it, and the fraction of pairs the grouping cuts is reported beside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import InputError, why
from .clusters import pair_groups
from .intervals import estimate, ratio_replicates, replicate_frame

SOURCES = ("CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB")
DEFAULT_THRESHOLDS = ((5.0, 95.0), (10.0, 90.0))
HEADLINE = DEFAULT_THRESHOLDS[0]  # the threshold tables and reports lead with
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


def _block_product(Xn: torch.Tensor, i0, i1, j0, j1) -> torch.Tensor:
    return Xn[i0:i1] @ Xn[j0:j1].T


def _upper(S: torch.Tensor, i0, j0) -> torch.Tensor:
    if i0 == j0:
        r, c = torch.triu_indices(S.shape[0], S.shape[1], offset=1)
        return S[r, c]
    return S.reshape(-1)


def _bin_index(v: torch.Tensor) -> torch.Tensor:
    """Histogram bin of each value. Any monotone rule works (both passes use this one), so it
    runs in the values' own precision."""
    scale = _N_BINS / (_HI_EDGE - _LO_EDGE)
    return ((v - _LO_EDGE) * scale).clamp_(0, _N_BINS - 1).long()


class _PairGather:
    """Collects the cosines of given pairs (i < j) from the blocks of the null as they pass."""

    def __init__(self, idx: np.ndarray, block: int, n: int):
        self.idx = idx
        self.block = block
        nb = (n + block - 1) // block
        key = (idx[:, 0] // block) * nb + idx[:, 1] // block if len(idx) else np.zeros(0, np.int64)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        self.nb = nb
        self.values = np.empty(len(idx))

    def take(self, S: torch.Tensor, i0: int, j0: int) -> None:
        k = (i0 // self.block) * self.nb + j0 // self.block
        lo, hi = np.searchsorted(self.key, [k, k + 1])
        if lo == hi:
            return
        sel = self.order[lo:hi]
        a = torch.as_tensor(self.idx[sel, 0] - i0)
        b = torch.as_tensor(self.idx[sel, 1] - j0)
        self.values[sel] = S[a, b].double().numpy()


def null_order_statistics(Xn: torch.Tensor, ranks, block: int = 2048, pairs: np.ndarray | None = None):
    """The null's sorted values at the given 0-based ranks, exactly, and (with `pairs`, (k, 2)
    row indices i < j) the cosines of those pairs from the same products. Returns (values, m, pair cosines)."""
    n = Xn.shape[0]
    m = n * (n - 1) // 2
    if m < 1:
        raise InputError(f"the map has {n} gene profile(s); at least 2 are needed for a null")
    ranks = sorted({int(r) for r in ranks if 0 <= r < m})
    gather = _PairGather(pairs if pairs is not None else np.zeros((0, 2), np.int64), block, n)
    counts = torch.zeros(_N_BINS, dtype=torch.int64)
    for i0, i1, j0, j1 in _blocks(n, block):
        counts += torch.bincount(_bin_index(_upper(_block_product(Xn, i0, i1, j0, j1), i0, j0)), minlength=_N_BINS)
    cum = torch.cumsum(counts, 0).numpy()
    bin_of = {r: int(np.searchsorted(cum, r, side="right")) for r in ranks}
    wanted = torch.zeros(_N_BINS, dtype=torch.bool)
    if bin_of:
        wanted[list(set(bin_of.values()))] = True
    gathered: dict[int, list[torch.Tensor]] = {b: [] for b in set(bin_of.values())}
    for i0, i1, j0, j1 in _blocks(n, block):
        S = _block_product(Xn, i0, i1, j0, j1)
        gather.take(S, i0, j0)  # from the same product as the order statistics it is compared with
        v = _upper(S, i0, j0)
        idx = _bin_index(v)
        sel = wanted[idx]
        if sel.any():
            vs, bs = v[sel], idx[sel]
            for b in gathered:
                gathered[b].append(vs[bs == b])
    sorted_bins = {b: torch.sort(torch.cat(vals).double()).values.numpy() for b, vals in gathered.items()}
    out = {}
    for r in ranks:
        b = bin_of[r]
        out[r] = float(sorted_bins[b][r - (cum[b - 1] if b > 0 else 0)])
    return out, m, gather.values


def rank_cuts(m: int, lower: float, upper: float) -> tuple[int, int]:
    """efaar's rule as counts: K, the largest count c with c / m <= lower / 100, and L, the
    smallest with c / m >= upper / 100 (m + 1 when none), in the same float division."""
    lo, hi = lower / 100, upper / 100
    K = min(int(np.floor(lo * m)), m)
    while K + 1 <= m and (K + 1) / m <= lo:
        K += 1
    while K > 0 and K / m > lo:
        K -= 1
    L = max(int(np.ceil(hi * m)), 0)
    while L - 1 >= 0 and (L - 1) / m >= hi:
        L -= 1
    while L <= m and L / m < hi:
        L += 1
    return K, L


def read_pairs(path: Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise InputError(f"{path}: annotation file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot parse as entity1,entity2 CSV ({why(e)})") from None
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


@dataclass
class RecallResult:
    source: str
    lower: float
    upper: float
    recall: float
    ci_low: float
    ci_high: float
    se: float
    n_pairs: int
    n_genes: int
    n_units: int  # groups of genes the jackknife leaves out, one at a time
    pairs_cut: float  # the fraction of the source's pairs whose genes the grouping puts apart
    random_recall: float
    lower_threshold: float  # recalled below this cosine (v[K]), strictly
    upper_threshold: float  # recalled above this cosine (v[L-1]), strictly


def recall_metric(source: str, lower: float) -> str:
    """The name of a recall in the replicate tables, e.g. recall/CORUM/5."""
    return f"recall/{source}/{lower:g}"


def _recalled(cos: np.ndarray, stats: dict, m: int, K: int, L: int) -> np.ndarray:
    low = np.ones(len(cos), bool) if K >= m else cos < stats[K]
    high = np.zeros(len(cos), bool) if L > m else (np.ones(len(cos), bool) if L == 0 else cos > stats[L - 1])
    return low | high


RECALL_UNIT = "group of genes (the source's pairs cut as little as possible)"


def gene_groups(pi: np.ndarray, genes: list[str]) -> tuple[np.ndarray, int, float]:
    """pair_groups on the genes in name order, so the groups (and the interval) do not depend on
    the order of the map's rows."""
    n = len(genes)
    rank = np.empty(n, np.int64)
    rank[np.argsort(np.asarray(genes, dtype=str), kind="stable")] = np.arange(n)
    group, k, cut = pair_groups(rank[pi] if len(pi) else pi, n)
    return group[rank], k, cut


def _touching(group: np.ndarray, pi: np.ndarray):
    """f(values per pair, k) -> per group, the sum of the values of the pairs that touch it
    (a pair inside one group counts once, a pair across two groups in both)."""
    ga, gb = (group[pi[:, 0]], group[pi[:, 1]]) if len(pi) else (np.zeros(0, int), np.zeros(0, int))
    across = ga != gb

    def f(values, k: int) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        return np.bincount(ga, weights=v, minlength=k) + np.bincount(gb[across], weights=v[across], minlength=k)

    return f


def recall_with_replicates(
    X,
    genes: list[str],
    sources: dict[str, pd.DataFrame],
    thresholds=DEFAULT_THRESHOLDS,
    block: int = 2048,
    dtype=torch.float32,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall of every source at every (lower, upper) percentile pair with its interval, as a
    tidy table, and the delete-a-group jackknife replicates (metric, unit, value)."""
    if len(genes) != len(set(genes)):
        dup = pd.Series(genes)[pd.Series(genes).duplicated()].iloc[0]
        raise InputError(f"gene '{dup}' has several profiles in the map; aggregate first")
    Xn = normalize_rows(X, dtype)  # once, for the null and for every source
    n = Xn.shape[0]
    m = n * (n - 1) // 2
    idx = {name: pair_indices(pairs, genes) for name, pairs in sources.items()}
    every = np.unique(np.vstack([np.zeros((0, 2), np.int64), *idx.values()]), axis=0)
    cuts = {t: rank_cuts(m, *t) for t in thresholds}
    ranks = {r for K, L in cuts.values() for r in (K, L - 1)}
    stats, m, cos_every = null_order_statistics(Xn, ranks, block, every)
    rows, reps = [], []
    for name, pi in idx.items():
        cos = (
            cos_every[np.searchsorted(every[:, 0] * n + every[:, 1], pi[:, 0] * n + pi[:, 1])]
            if len(pi)
            else np.zeros(0)
        )
        group, n_groups, pairs_cut = gene_groups(pi, genes)
        touching = _touching(group, pi)
        n_per_group = touching(np.ones(len(pi)), n_groups)
        for (lo, hi), (K, L) in cuts.items():
            hit = _recalled(cos, stats, m, K, L)
            value = float(hit.mean()) if len(pi) else float("nan")
            r = ratio_replicates(hit.sum(), len(pi), touching(hit, n_groups), n_per_group)
            e = estimate(value, r, (0.0, 1.0), RECALL_UNIT)
            rows.append(
                RecallResult(
                    name,
                    lo,
                    hi,
                    value,
                    e.ci_low,
                    e.ci_high,
                    e.se,
                    int(len(pi)),
                    int(len(np.unique(pi))),
                    n_groups,
                    pairs_cut,
                    (min(K, m) + max(m - L, 0)) / m,
                    stats.get(K, float("inf")),
                    stats.get(L - 1, float("-inf")),
                ).__dict__
            )
            reps.append(replicate_frame(recall_metric(name, lo), [f"group{k}" for k in range(n_groups)], r))
    return pd.DataFrame(rows), pd.concat(reps, ignore_index=True) if reps else replicate_frame("", [], [])


def relationship_recall(
    X,
    genes: list[str],
    sources: dict[str, pd.DataFrame],
    thresholds=DEFAULT_THRESHOLDS,
    block: int = 2048,
    dtype=torch.float32,
) -> pd.DataFrame:
    """Recall of every source at every (lower, upper) percentile pair, with intervals, as a tidy table."""
    return recall_with_replicates(X, genes, sources, thresholds, block, dtype)[0]


def load_sources(annotation_dir: Path, names=SOURCES, extra: dict[str, Path] | None = None) -> dict[str, pd.DataFrame]:
    out = {name: read_pairs(Path(annotation_dir) / f"{name}.txt") for name in names}
    for name, path in (extra or {}).items():
        out[name] = read_pairs(path)
    return out
