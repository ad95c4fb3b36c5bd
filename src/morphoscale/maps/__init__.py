"""Maps: filter embeddings, align them on control wells, aggregate to perturbations.

The aligners by name, with what each does in a line: the one list the config schema, the
CLI help and the docs read (maps/align.py maps each name to its estimator class, and checks
at import that the two agree). Kept here, without numpy or scikit-learn, so that the
command line's help costs no import."""

DEFAULT_ALIGNER = "tvn_per_batch"

ALIGNER_SUMMARIES = {
    "tvn_per_batch": "TVN with center-scaling per batch, on the components the controls support (default)",
    "tvn": "typical variation normalization, efaar 1.0's exactly",
    "sphering": "ZCA whitening fitted on all controls",
    "pca_center_scale": "PCA on controls, then center-scaling per batch",
    "center_scale": "center-scaling on each batch's controls",
    "harmony": "Harmony on PCA components (fit_transform only)",
    "none": "no alignment",
}


def aligner_help() -> str:
    return "; ".join(f"{name}: {what}" for name, what in ALIGNER_SUMMARIES.items()) + "; docs/map.md."
