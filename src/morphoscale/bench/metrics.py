"""The metrics `morphoscale bench` knows, and which of them a run computes (`--metrics`, `--quick`)."""

from __future__ import annotations

from ..errors import ConfigError

METRICS = {  # name: what it measures (and what it needs); the order they run in
    "recall": "known-relationship recall, 5 sources, 5/95 and 10/90 (gene profiles)",
    "complexes": "CORUM complexes whose members look alike, KS test per complex (and the complex heatmap)",
    "map_consistency": "mAP: CORUM complex members retrieved among other complexes' members",
    "compound_gene": "compound-gene target retrieval (needs --compound-targets)",
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
QUICK = ("recall", "complexes", "consistency", "compound_gene", "truth_cosine")  # each under a second or two at 17k genes


def select_metrics(metrics: list[str] | None = None, quick: bool = False, clustering: bool = False, key: str = "--metrics") -> tuple[list[str], bool]:
    """The metrics to run, in METRICS order, and whether the user named them (then one the map
    cannot support is reported as skipped instead of left out). Accepts comma-separated items."""
    if metrics and quick:
        raise ConfigError(f"{key} and quick: give one of them")
    names = [m.strip() for item in metrics or [] for m in str(item).split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ConfigError(f"{key}: unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    chosen = set(names) if names else set(QUICK) if quick else set(METRICS) - {"clustering"}
    if clustering:
        chosen.add("clustering")
    return [m for m in METRICS if m in chosen], bool(names)
