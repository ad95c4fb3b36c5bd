"""The metrics `morphoscale bench` knows, and which of them a run computes (`--metrics`, `--quick`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

METRICS = {  # name: what it measures (and what it needs); the order they run in
    "recall": "known-relationship recall, 5 sources, 5/95 and 10/90 (gene profiles)",
    "complexes": "CORUM complexes whose members look alike, KS test per complex (and the complex heatmap)",
    "map_consistency": "mAP: CORUM complex members retrieved among other complexes' members",
    "compound_gene": "compound-gene target retrieval (needs --compound-targets)",
    "map_target_consistency": "mAP: compounds sharing a target retrieved among compounds of other targets (needs --compound-targets; "
    "only when asked for or in a protocol: its cost grows with the square of the annotated compounds)",
    "drug_similarity": "drug-drug similarity score of shared-target compounds (needs --compound-targets)",
    "consistency": "replicate consistency: mean cosine of a perturbation's wells vs random wells",
    "magnitude": "perturbation magnitude: energy distance to controls vs a plate-matched null",
    "map_activity": "mAP: a perturbation's replicate wells retrieved among control wells",
    "drug_vs_control": "linear and MLP probes telling compound wells from control wells",
    "umap": "UMAP of the wells before and after alignment (needs --raw-embeddings)",
    "clustering": "UMAP + HDBSCAN cluster scores (slow; only when asked for)",
    "decoding_r2": "decoding R2 of the simulated phenotype parameters (needs --truth)",
    "truth_cosine": "cosine correlation of the map with the true phenotypes (needs --truth)",
}
OPT_IN = ("clustering", "map_target_consistency")  # never in the default: slow, or quadratic in the annotated compounds
QUICK = (
    "recall",
    "complexes",
    "consistency",
    "compound_gene",
    "truth_cosine",
)  # each under a second or two at 17k genes


@dataclass(frozen=True)
class Protocol:
    """A published benchmark's steps, so that a map of published embeddings is scored as its paper did."""

    name: str
    metrics: tuple[str, ...]
    recall_profiles: str  # "genes": the CRISPR-only map; "all": genes and compounds (at each concentration) in one null
    steps: str
    published: dict = field(default_factory=dict)  # source -> {metric: value}, with the paper


PROTOCOLS = {
    "rxrx3-core": Protocol(
        "rxrx3-core",
        ("recall", "compound_gene", "map_target_consistency"),
        "genes",
        "RxRx3-core paper (Kraus et al., LMRL at ICLR 2025): wells aligned by PCA and center-scale on the EMPTY_control wells of each "
        "experiment (`map --align pca_center_scale`), aggregated by mean per gene and per compound and concentration; recall at 5/95 "
        "and 10/90 on the CRISPR-only map; compound-gene retrieval against the compound-gene associations the user passes.",
        {
            "paper": "RxRx3-core: Benchmarking drug-target interactions in High-Content Microscopy (arXiv "
            "2503.20158), recall 5/95, CRISPR-only map",
            "random": {"CORUM": 0.11, "HuMAP": 0.11, "Reactome": 0.11, "StringDB": 0.11},
            "CellProfiler": {"CORUM": 0.361, "HuMAP": 0.444, "Reactome": 0.160, "StringDB": 0.330},
            "OpenPhenom": {"CORUM": 0.300, "HuMAP": 0.352, "Reactome": 0.158, "StringDB": 0.281},
            "Phenom-1": {"CORUM": 0.395, "HuMAP": 0.482, "Reactome": 0.188, "StringDB": 0.349},
        },
    ),
    "rxrx3-core-notebook": Protocol(
        "rxrx3-core-notebook",
        ("recall", "compound_gene"),
        "all",
        "The earlier official notebook (EFAAR_benchmarking RxRx3-core_benchmarks): the same map, but recall over genes and compounds "
        "(each concentration its own profile) in one null, which raises every recall; not the paper's numbers.",
    ),
    "jump": Protocol(
        "jump",
        ("map_activity", "map_consistency", "map_target_consistency"),
        "genes",
        "JUMP (copairs' mAP as the JUMP papers use it): phenotypic activity, each perturbation's replicate wells retrieved among the "
        "negcon wells (fraction retrieved at BH-corrected p < 0.05); consistency, genes of a CORUM complex and compounds sharing an "
        "annotated target (--compound-targets) retrieved among the others.",
    ),
}


def select_metrics(
    metrics: list[str] | None = None,
    quick: bool = False,
    clustering: bool = False,
    key: str = "--metrics",
    protocol: str | None = None,
) -> tuple[list[str], bool]:
    """The metrics to run, in METRICS order, and whether the user named them (then one the map
    cannot support is reported as skipped instead of left out). Accepts comma-separated items.
    A protocol names its metrics (and so does not combine with metrics or quick)."""
    if sum(map(bool, (metrics, quick, protocol))) > 1:
        raise ConfigError(f"{key}, quick and protocol: give one of them")
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {protocol}: unknown; choose from {', '.join(PROTOCOLS)}")
        metrics = list(PROTOCOLS[protocol].metrics)
    names = [m.strip() for item in metrics or [] for m in str(item).split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ConfigError(f"{key}: unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    chosen = set(names) if names else set(QUICK) if quick else set(METRICS) - set(OPT_IN)
    if clustering:
        chosen.add("clustering")
    return [m for m in METRICS if m in chosen], bool(names)
