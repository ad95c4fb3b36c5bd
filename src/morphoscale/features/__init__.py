"""Hand-crafted (CellProfiler-style) features: segment, measure, aggregate."""
