"""morphoscale: learn representations of cellular morphology and turn them into maps of biology."""

__version__ = "0.1.0"
