"""How a model runs on the hardware, shared by train and embed: the compute precision
(autocast) and torch.compile with an eager fallback.

Precision names are Lightning's: `32` (fp32), `bf16-mixed` and `16-mixed` (autocast; weights
and optimizer state stay fp32). fp16 autocast needs a GPU; bf16 runs on both.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Literal, get_args

from .errors import ConfigError, why

Precision = Literal["32", "32-true", "bf16-mixed", "16-mixed"]
PRECISIONS = get_args(Precision)


def wants_gpu(accelerator: str) -> bool:
    """Whether a run with this accelerator setting computes on a GPU."""
    import torch

    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def resolve_precision(precision: str | None, on_gpu: bool, key: str = "precision") -> str:
    """The precision to run: the given one (checked against the device) or the default,
    bf16-mixed on a GPU and 32 on the CPU."""
    if precision is None:
        return "bf16-mixed" if on_gpu else "32"
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}: '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and not on_gpu:
        raise ConfigError(f"{key}: 16-mixed (fp16 autocast) needs a GPU; on the CPU use bf16-mixed or 32")
    return "32" if precision == "32-true" else precision


def autocast(device_type: str, precision: str):
    """The autocast context of a precision on a device (a no-op for 32)."""
    import torch

    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device_type, dtype=dtype)


def compiled(fn: Callable, what: str, warn=None) -> Callable:
    """`fn` under torch.compile; if compiling fails (no compiler, an unsupported operation),
    one warning line and the eager `fn` from then on. Compilation happens at the first call,
    so that is where a failure shows."""
    import torch

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    try:
        fast = torch.compile(fn)
    except Exception as e:  # torch.compile itself refuses (e.g. an unsupported Python)
        warn(f"warning: torch.compile of {what} failed ({why(e)}); running eager")
        return fn
    failed = False

    def run(*args, **kwargs):
        nonlocal failed
        if failed:
            return fn(*args, **kwargs)
        try:
            return fast(*args, **kwargs)
        except Exception as e:  # compiling happens at the first call (and at a recompile)
            if not _is_compile_failure(e):
                raise
            warn(f"warning: torch.compile of {what} failed ({why(e)}); running eager")
            failed = True
            return fn(*args, **kwargs)

    return run


def _is_compile_failure(e: Exception) -> bool:
    """Errors raised by the compiler stack (dynamo, inductor, the C++ toolchain), not by the model."""
    mod = type(e).__module__ or ""
    return (
        mod.startswith(("torch._dynamo", "torch._inductor", "torch.fx", "torch._subclasses"))
        or "CompilationError" in type(e).__name__
    )
