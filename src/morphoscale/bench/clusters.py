"""Units that share biology, for the jackknife (bench/intervals.py).

A jackknife is honest only when the units it leaves out are independent. Genes are not: on a
simulated screen every gene of a complex (chosen or incidental) or of a true pair carries the
same latent phenotype (simulate/biology.py), and an annotation source's pairs chain genes into
complexes and pathways. So:

- `truth_clusters`: on a simulated screen, the connected components of the genes linked by a
  shared complex or pair (ground_truth/complexes.csv, pairs.csv): the units of the metrics
  scored against the truth. A compound joins the cluster of its targets
  (`perturbation_clusters`), so decoding R2 leaves out a cluster of perturbations at a time.
- `pair_groups`: for recall against an annotation source, at least 50 groups of genes that
  cut as few of the source's pairs as possible: the communities of its graph of pairs
  (Leiden, modularity), kept whole; the fraction of pairs cut is reported with the interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MIN_GROUPS, MAX_GROUPS = 50, 100


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes, given (k, 2) edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(A, directed=False)[1]


def truth_clusters(folder: Path, genes: list[str]) -> pd.Series | None:
    """gene -> cluster name ('cluster<k>', by the cluster's first gene in sorted order) for the
    simulated screen's genes; None when the ground truth has no complexes.csv / pairs.csv."""
    folder = Path(folder)
    if not (folder / "complexes.csv").exists() or not (folder / "pairs.csv").exists():
        return None
    where = {g: i for i, g in enumerate(genes)}
    edges = []
    complexes = pd.read_csv(folder / "complexes.csv")
    for _, members in complexes.groupby("complex")["gene"]:
        ids = [where[g] for g in members.astype(str) if g in where]
        edges += [(ids[0], j) for j in ids[1:]]
    pairs = pd.read_csv(folder / "pairs.csv")
    edges += [
        (where[a], where[b])
        for a, b in zip(pairs["gene1"].astype(str), pairs["gene2"].astype(str))
        if a in where and b in where
    ]
    return pd.Series(_names(components(len(genes), np.array(edges))), index=list(genes), name="cluster")


def truth_units(folder: Path, genes: list[str]) -> tuple[pd.Series | None, pd.DataFrame | None]:
    """(gene -> cluster, the compounds' targets) of a simulated screen's ground_truth/ folder;
    None for what it lacks (a screen written before these files existed)."""
    targets = Path(folder) / "compound_targets.csv"
    ct = pd.read_csv(targets) if targets.exists() else None
    if ct is not None and not {"compound", "target"} <= set(ct.columns):
        ct = None
    return truth_clusters(folder, genes), ct


def _names(labels: np.ndarray) -> np.ndarray:
    """Stable names for component labels: numbered by the position of each component's first node."""
    _, first, which = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # each component's rank by its first node
    return np.array([f"cluster{k}" for k in rank])[which]


def perturbation_clusters(
    perturbations: np.ndarray, gene_cluster: pd.Series, compound_targets: pd.DataFrame | None
) -> np.ndarray:
    """The cluster of each perturbation name: a gene's, a compound's targets' (a compound whose
    targets lie in several clusters joins them all into one), else the perturbation itself."""
    perts = np.asarray(perturbations).astype(str)
    names = sorted(set(perts) | set(gene_cluster.unique()))
    where = {p: i for i, p in enumerate(names)}
    edges = [(where[g], where[c]) for g, c in gene_cluster.items() if g in where]
    if compound_targets is not None and len(compound_targets):
        for cpd, t in zip(compound_targets["compound"].astype(str), compound_targets["target"].astype(str)):
            if cpd in where and t in gene_cluster.index:
                edges.append((where[cpd], where[gene_cluster[t]]))
    labels = components(len(names), np.array(edges))
    # name each component by its cluster name where it has one, else by its member
    clusters, name_of = set(gene_cluster.values), {}
    for n, lab in zip(names, labels):
        if n in clusters:
            name_of.setdefault(lab, n)
    return np.array([name_of.get(labels[where[p]], p) for p in perts])


def pair_groups(pairs: np.ndarray, n_genes: int) -> tuple[np.ndarray, int, float]:
    """(group of each gene that has a pair, -1 for the others; the number of groups; the
    fraction of pairs whose two genes fall in different groups).

    The source's graph of pairs is cut into communities (igraph's Leiden, modularity: pairs
    mostly inside, few between), each kept whole: as they are when there are 50 to 100,
    packed by size into 100 groups when there are more; when there are fewer than 50 (a
    small map), the largest are split along a reverse Cuthill-McKee order (linked genes sit
    close in it) into contiguous stretches, 50 groups in all, or one per gene when fewer
    genes have pairs. Groups may differ in size: the delete-a-group jackknife of clusters of
    unequal size (JK1) still applies."""
    pi = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    group = np.full(n_genes, -1, np.int64)
    if not len(pi):
        return group, 0, 0.0
    genes = np.unique(pi)
    local = np.searchsorted(genes, pi)
    comm = communities(len(genes), local)
    n_comm = int(comm.max() + 1)
    if n_comm >= MIN_GROUPS:
        g = comm if n_comm <= MAX_GROUPS else _pack(comm, MAX_GROUPS)
    else:
        g = _split(comm, local, min(MIN_GROUPS, len(genes)))
    group[genes] = g
    cut = float(np.mean(g[local[:, 0]] != g[local[:, 1]]))
    return group, int(g.max() + 1), cut


def communities(n: int, edges: np.ndarray, seed: int = 0) -> np.ndarray:
    """Community of each of n nodes (every node on an edge): Leiden on modularity, run to
    convergence, seeded, on the edges in sorted order, so the same graph gives the same
    communities; numbered by their first node."""
    import random

    import igraph

    e = np.unique(np.sort(np.asarray(edges, dtype=np.int64), axis=1), axis=0)
    igraph.set_random_number_generator(random.Random(seed))
    try:
        labels = np.asarray(
            igraph.Graph(n=n, edges=e.tolist())
            .community_leiden(objective_function="modularity", n_iterations=-1)
            .membership
        )
    finally:
        igraph.set_random_number_generator(random)
    _, first, which = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[which]


def _pack(comm: np.ndarray, k: int) -> np.ndarray:
    """Whole communities into k groups of about equal numbers of genes (largest first, into the smallest group)."""
    sizes = np.bincount(comm)
    load, into = np.zeros(k), np.empty(len(sizes), np.int64)
    for c in np.argsort(-sizes, kind="stable"):
        into[c] = int(np.argmin(load))
        load[into[c]] += sizes[c]
    return into[comm]


def _split(comm: np.ndarray, local: np.ndarray, k: int) -> np.ndarray:
    """k groups: each community cut into contiguous stretches of its reverse Cuthill-McKee
    order, the number of stretches by its share of the genes (largest remainders, one at least)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = len(comm)
    A = coo_matrix((np.ones(len(local)), (local[:, 0], local[:, 1])), shape=(n, n)).tocsr()
    order = reverse_cuthill_mckee(A + A.T, symmetric_mode=True)
    sizes = np.bincount(comm)
    share = sizes / n * k
    parts = np.maximum(1, np.floor(share).astype(int))
    for c in np.argsort(-(share - np.floor(share)), kind="stable"):
        if parts.sum() >= k:
            break
        parts[c] += 1
    parts = np.minimum(parts, sizes)
    group, base = np.empty(n, np.int64), np.concatenate([[0], np.cumsum(parts)[:-1]])
    for c in range(len(sizes)):
        members = order[comm[order] == c]  # the community's genes in RCM order
        group[members] = base[c] + (np.arange(len(members)) * parts[c]) // len(members)
    return group
