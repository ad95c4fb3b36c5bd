"""The screen's biology: which genes, which complexes, which phenotype each perturbation has.

Genes come from real CORUM complexes (CORUM_clusters.tsv) and real hu.MAP / StringDB
pairs of the efaar-benchmarking annotations. Each complex (and each chosen pair)
carries a latent phenotype: a vector over the interpretable morphology PARAMETERS.
A gene's phenotype is the sum over its complexes of the complex's vector times a
gene-specific strength, plus gene-specific noise; a fraction of genes has none.
Compounds act on target genes through a Hill dose-response, with off-target effects
and toxicity at high dose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# The interpretable morphology parameters a phenotype moves, in standard units (0 = wild type).
PARAMETERS = [
    "nucleus_area",
    "nucleus_eccentricity",
    "dna_texture",
    "cell_area",
    "cell_eccentricity",
    "actin_density",
    "actin_coherence",
    "mito_fragmentation",
    "er_intensity",
    "er_texture",
    "nucleoli_count",
    "nucleoli_size",
    "golgi_dispersion",
    "cell_count",
    "multinucleation",
]
P = len(PARAMETERS)


@dataclass
class BiologyConfig:
    n_complexes: int = 20
    min_complex_size: int = 3
    max_complex_size: int = 12
    n_pairs: int = 10  # extra gene pairs from hu.MAP / StringDB, each with a shared phenotype
    frac_no_phenotype: float = 0.15
    complex_magnitude: tuple[float, float] = (1.0, 2.0)
    # Every other CORUM complex with >= 2 of the screen's genes also carries a (weaker)
    # phenotype, so that all curated co-complex relationships among the genes are real.
    incidental_magnitude: tuple[float, float] = (0.4, 0.9)
    gene_strength: tuple[float, float] = (0.6, 1.2)
    gene_noise: float = 0.3
    n_compounds: int = 8
    concentrations: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # uM
    off_target: float = 0.3
    toxicity: float = 1.5  # cell_count drop (standard units) at full toxic dose
    max_genes: int | None = None


@dataclass
class Biology:
    genes: list[str]
    phenotype: dict[str, np.ndarray]  # gene -> (P,)
    memberships: pd.DataFrame  # complex, gene
    pair_groups: pd.DataFrame  # source, gene1, gene2
    compounds: pd.DataFrame  # compound, target, ec50, hill, emax
    compound_offtarget: dict[str, np.ndarray] = field(default_factory=dict)
    has_phenotype: dict[str, bool] = field(default_factory=dict)

    def compound_phenotype(self, compound: str, concentration: float) -> np.ndarray:
        rows = self.compounds[self.compounds.compound == compound]
        r0 = rows.iloc[0]
        occ = float(r0.emax * concentration**r0.hill / (r0.ec50**r0.hill + concentration**r0.hill))
        effect = occ * np.sum([self.phenotype[t] for t in rows.target], axis=0)
        effect = effect + occ * self.compound_offtarget[compound]
        # toxicity: fewer (and smaller) cells once the dose passes ~10x the EC50
        tox = concentration / (concentration + 10 * r0.ec50)
        effect = effect.copy()
        effect[PARAMETERS.index("cell_count")] -= r0.toxicity * tox
        effect[PARAMETERS.index("cell_area")] -= 0.5 * r0.toxicity * tox
        return effect


def read_complexes(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if "\t" in line:
            name, genes = line.split("\t", 1)
            out.append((name, list(dict.fromkeys(genes.split()))))
    return out


def make_biology(annotation_dir: Path, cfg: BiologyConfig, rng: np.random.Generator) -> Biology:
    """The screen's biology from real annotations: chosen CORUM complexes and hu.MAP/StringDB
    pairs give genes shared phenotypes, compounds hit some of the active genes. Every draw
    comes from `rng`, in this order, so a seed gives one biology."""
    all_complexes = read_complexes(annotation_dir / "CORUM_clusters.tsv")
    chosen, genes_seen = _choose_complexes(all_complexes, cfg, rng)
    memberships = pd.DataFrame([(n, g, True) for n, ms in chosen for g in ms], columns=["complex", "gene", "chosen"])
    pairs = _extra_pairs(annotation_dir, cfg, rng, genes_seen)
    genes = sorted(genes_seen)
    if cfg.max_genes and len(genes) > cfg.max_genes:
        genes = sorted(rng.choice(genes, cfg.max_genes, replace=False).tolist())
    gene_set = set(genes)
    chosen_names = {name for name, _ in chosen}
    incidental = [(n, [g for g in ms if g in gene_set]) for n, ms in all_complexes if n not in chosen_names]
    incidental = [(n, ms) for n, ms in incidental if len(ms) >= 2]
    groups = [(n, ms) for n, ms in chosen] + incidental + [(f"{s}:{a}-{b}", [a, b]) for s, a, b in pairs]
    families_of, vec = _families(groups, len(chosen), len(incidental), genes, cfg, rng)
    phenotype, has = _gene_phenotypes(genes, families_of, vec, cfg, rng)
    compounds, offt = _compounds([g for g in genes if has[g]], cfg, rng)
    memberships = pd.concat(
        [
            memberships,
            pd.DataFrame([(n, g, False) for n, ms in incidental for g in ms], columns=["complex", "gene", "chosen"]),
        ]
    )
    pair_groups = pd.DataFrame(pairs, columns=["source", "gene1", "gene2"])
    return Biology(
        genes,
        phenotype,
        memberships[memberships.gene.isin(gene_set)].reset_index(drop=True),
        pair_groups,
        compounds,
        offt,
        has,
    )


def _choose_complexes(all_complexes, cfg: BiologyConfig, rng) -> tuple[list, set]:
    """Complexes of the allowed sizes in a random order, mostly new genes each (some genes
    sit in two), up to cfg.n_complexes; and the genes they hold."""
    complexes = [(n, g) for n, g in all_complexes if cfg.min_complex_size <= len(g) <= cfg.max_complex_size]
    chosen, genes_seen = [], set()
    for k in rng.permutation(len(complexes)):
        name, members = complexes[k]
        if len(genes_seen & set(members)) > 1:
            continue
        chosen.append((name, members))
        genes_seen |= set(members)
        if len(chosen) == cfg.n_complexes:
            break
    return chosen, genes_seen


def _extra_pairs(annotation_dir: Path, cfg: BiologyConfig, rng, genes_seen: set) -> list[tuple[str, str, str]]:
    """Real hu.MAP and StringDB pairs among new genes (genes_seen grows with them)."""
    pairs = []
    for source in ("HuMAP", "StringDB"):
        df = pd.read_csv(annotation_dir / f"{source}.txt", dtype=str)
        df = df[(df.entity1 != df.entity2) & ~df.entity1.isin(genes_seen) & ~df.entity2.isin(genes_seen)]
        take = df.iloc[rng.permutation(len(df))[: cfg.n_pairs // 2]]
        for a, b in zip(take.entity1, take.entity2):
            if a not in genes_seen and b not in genes_seen:
                pairs.append((source, a, b))
                genes_seen |= {a, b}
    return pairs


def _families(groups, n_chosen: int, n_incidental: int, genes: list[str], cfg: BiologyConfig, rng) -> tuple[dict, dict]:
    """CORUM lists many variants of one machine (spliceosome, proteasome, ...): groups whose
    screen genes overlap by half or more form one family and share one latent phenotype.
    Returns (gene -> its families, family -> latent vector)."""
    gene_set = set(genes)
    family = list(range(len(groups)))

    def root(i):
        while family[i] != i:
            family[i] = family[family[i]]
            i = family[i]
        return i

    sets = [set(ms) & gene_set for _, ms in groups]
    for i in range(len(groups)):
        for j in range(i):
            shared = len(sets[i] & sets[j])
            if shared >= 2 and shared >= 0.5 * min(len(sets[i]), len(sets[j])):
                family[root(i)] = root(j)
    vec = {}
    for i in range(len(groups)):
        r = root(i)
        if r not in vec:
            major = any(root(k) == r for k in range(n_chosen)) or r >= n_chosen + n_incidental
            vec[r] = _latent(cfg.complex_magnitude if major else cfg.incidental_magnitude, rng)
    families_of: dict[str, set[int]] = {g: set() for g in genes}
    for i, members in enumerate(sets):
        for g in members:
            families_of[g].add(root(i))
    return families_of, vec


def _latent(lo_hi, rng) -> np.ndarray:
    v = rng.normal(size=P)
    return v / np.linalg.norm(v) * rng.uniform(*lo_hi) * np.sqrt(P) / 2


def _gene_phenotypes(genes, families_of, vec, cfg: BiologyConfig, rng) -> tuple[dict, dict]:
    """Each gene's phenotype: a random strength times the sum of its families' vectors, plus
    noise; a fraction of genes (and genes of no family) have none."""
    no_pheno = set(rng.choice(genes, int(round(cfg.frac_no_phenotype * len(genes))), replace=False).tolist())
    phenotype, has = {}, {}
    for g in genes:
        if g in no_pheno or not families_of[g]:
            phenotype[g], has[g] = np.zeros(P), False
            continue
        strength = rng.uniform(*cfg.gene_strength)
        phenotype[g] = strength * np.sum(
            [vec[f] for f in sorted(families_of[g])], axis=0
        ) + cfg.gene_noise * rng.normal(size=P)
        has[g] = True
    return phenotype, has


def _compounds(active: list[str], cfg: BiologyConfig, rng) -> tuple[pd.DataFrame, dict]:
    """Compounds with one or two targets among the active genes, dose-response parameters
    shared by a compound's rows, and an off-target phenotype each."""
    rows, offt = [], {}
    for k in range(cfg.n_compounds):
        cid = f"CPD{k + 1:04d}"
        n_t = 1 if rng.random() < 0.7 else 2
        targets = rng.choice(active, n_t, replace=False)
        ec50 = float(10 ** rng.uniform(-1.5, 0.5))
        for t in targets:
            rows.append(
                {
                    "compound": cid,
                    "target": t,
                    "ec50": ec50,
                    "hill": float(rng.uniform(0.8, 2.0)),
                    "emax": float(rng.uniform(0.8, 1.2)),
                    "toxicity": cfg.toxicity * float(rng.uniform(0.5, 1.5)),
                }
            )
        offt[cid] = cfg.off_target * rng.normal(size=P)
    compounds = pd.DataFrame(rows)
    for col in ("ec50", "hill", "emax", "toxicity"):
        compounds[col] = compounds.groupby("compound")[col].transform("first")
    return compounds, offt
