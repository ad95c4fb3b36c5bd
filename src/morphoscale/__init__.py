"""morphoscale: learn representations of cellular morphology and turn them into maps of biology."""

from .determinism import pin_environment

# before torch, numpy or any BLAS loads: the same kernels on every machine of a kind
if pin_environment():
    from .determinism import warn_if_loaded_before

    warn_if_loaded_before()

__version__ = "0.1.0"
