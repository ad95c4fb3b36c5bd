"""Maps: filter embeddings, align them on control wells, aggregate to perturbations."""
