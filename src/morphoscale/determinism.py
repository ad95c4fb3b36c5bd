"""Same seed, same numbers on CPU, whatever the machine's thread count or vector unit.

Two things make a CPU run differ between machines of one kind:

* **Kernels chosen by the machine.** PyTorch, oneDNN, MKL, OpenBLAS and NumPy each pick
  their fastest code path at run time (AVX-512 where the CPU has it, AVX2 where not), and
  different paths round differently. `pin_environment` fixes each library's choice to the
  AVX2 path every x86 machine of this kind has, through the environment variables those
  libraries read when they load (so it runs when morphoscale is imported, before torch or
  numpy are).
* **Reductions split over threads.** A sum split over two threads adds in another order
  than over one. Matrix products stay invariant under MKL's conditional numerical
  reproducibility on its AVX2 path in strict mode (`MKL_CBWR=AVX2,STRICT`), but three steps of training do not: oneDNN's
  convolution backward (and PyTorch's own for 1x1 kernels), LayerNorm's weight and bias
  gradients (a sum over every token of the batch) and BatchNorm's batch statistics. `thread_invariant` routes convolutions to
  PyTorch's own kernels (im2col and a matrix product) and computes those sums per feature,
  each of which one thread adds in one order.

`MORPHOSCALE_NATIVE_KERNELS=1` opts out of the pinning (the machine's fastest kernels,
numbers that may differ in the last digits between machines).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform

# environment variables read by the numeric libraries when they load
_ALWAYS = {
    "MKL_DYNAMIC": "FALSE",  # MKL uses the threads it is given, not fewer when it guesses it should
}
_X86_AVX2 = {
    # the AVX2 code path on every CPU (AUTO would take AVX-512 where there is one), strict CNR:
    # independent of the thread count
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's vectorised kernels (default: the best the CPU has)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT kernels
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's and SciPy's OpenBLAS kernels (default: by CPU model)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's own SIMD dispatch
}
OPT_OUT = "MORPHOSCALE_NATIVE_KERNELS"


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " avx2" in line
    except OSError:
        pass
    return False


def pin_environment() -> dict[str, str]:
    """Pin the numeric libraries' kernel choice (before they are imported); returns what it set.
    A variable the user set is left as it is."""
    if os.environ.get(OPT_OUT) == "1":
        return {}
    wanted = dict(_ALWAYS)
    if platform.machine().lower() in ("x86_64", "amd64") and _has_avx2():
        wanted.update(_X86_AVX2)
    set_here = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            set_here[k] = v
    return set_here


def warn_if_loaded_before() -> None:
    """A library loaded before morphoscale read its environment already: its kernels stay the
    machine's, and CPU results may differ in the last digits from `morphoscale` commands'."""
    import sys

    early = [m for m in ("numpy", "torch") if m in sys.modules]
    if early:
        import warnings

        from .errors import MorphoscaleWarning

        warnings.warn(
            f"{' and '.join(early)} loaded before morphoscale: {'its' if len(early) == 1 else 'their'} kernels are "
            "not pinned, so CPU results may differ in the last digits from the morphoscale commands' (import "
            "morphoscale first)",
            MorphoscaleWarning,
            stacklevel=3,
        )


def pinned_variables() -> dict[str, str | None]:
    """The variables determinism depends on, as this process has them."""
    return {k: os.environ.get(k) for k in [*_ALWAYS, *_X86_AVX2, OPT_OUT]}


# --- training ---------------------------------------------------------------------


@functools.cache
def thread_invariant_layer_norm_class():
    """nn.LayerNorm (same parameters, same forward values) whose weight and bias gradients
    do not depend on the thread count: autograd's default sums them over every token of the
    batch with a split that follows the threads; here each feature's sum is one contiguous
    row, which one thread adds in one order. Built on first use: torch loads after the pin."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Affine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, xhat, weight, bias):
            ctx.save_for_backward(xhat, weight)
            ctx.has_bias = bias is not None
            y = xhat * weight
            return y + bias if bias is not None else y

        @staticmethod
        def backward(ctx, grad):
            xhat, weight = ctx.saved_tensors
            c = weight.numel()
            rows = grad.reshape(-1, c)
            gw = (rows * xhat.reshape(-1, c)).t().contiguous().sum(1).reshape(weight.shape)
            gb = rows.t().contiguous().sum(1).reshape(weight.shape) if ctx.has_bias else None
            return grad * weight, gw, gb

    class ThreadInvariantLayerNorm(nn.LayerNorm):
        def forward(self, x):
            xhat = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
            if not self.elementwise_affine:
                return xhat
            return Affine.apply(xhat, self.weight, self.bias)

    return ThreadInvariantLayerNorm


@functools.cache
def thread_invariant_batch_norm_classes() -> dict:
    """BatchNorm1d/2d whose training-mode statistics are per-channel sums (PyTorch's CPU
    kernel adds per-thread partial sums); eval mode, running statistics and parameters are
    those of nn.BatchNorm. Maps each nn class to its stand-in."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def forward(self, x):
        if not (self.training or not self.track_running_stats):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        self._check_input_dim(x)
        c = x.shape[1]
        rows = x.transpose(0, 1).reshape(c, -1)  # one contiguous row per channel
        n = rows.shape[1]
        mean = rows.sum(1) / n
        var = (rows - mean[:, None]).pow(2).sum(1) / n
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return y

    return {
        cls: type(f"ThreadInvariant{cls.__name__}", (cls,), {"forward": forward})
        for cls in (nn.BatchNorm1d, nn.BatchNorm2d)
    }


@functools.cache
def thread_invariant_pointwise_conv_class():
    """nn.Conv2d for 1x1 kernels as one matrix product over every pixel of the batch (the
    CPU convolution adds the weight gradient's per-image products in per-thread parts)."""
    import torch.nn as nn

    class ThreadInvariantPointwiseConv2d(nn.Conv2d):
        def forward(self, x):
            b, c, h, w = x.shape
            y = self.weight.view(self.out_channels, c) @ x.transpose(0, 1).reshape(c, -1)
            if self.bias is not None:
                y = y + self.bias[:, None]
            return y.view(self.out_channels, b, h, w).transpose(0, 1)

    return ThreadInvariantPointwiseConv2d


def _is_pointwise(m) -> bool:
    return (
        m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.dilation == (1, 1)
        and m.groups == 1
    )


@contextlib.contextmanager
def thread_invariant(model, on_gpu: bool = False):
    """Train `model` on CPU with thread-count-invariant gradients; everything is restored
    after (the checkpoint holds the same parameters under the same names). On GPU, or with
    the opt-out set, it does nothing."""
    import torch
    import torch.nn as nn

    if on_gpu or os.environ.get(OPT_OUT) == "1":
        yield
        return
    ln_class = thread_invariant_layer_norm_class()
    bn_classes = thread_invariant_batch_norm_classes()
    swapped = []
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) and not isinstance(m, ln_class):
            swapped.append((m, m.__class__))
            m.__class__ = ln_class
        elif type(m) in bn_classes:
            swapped.append((m, m.__class__))
            m.__class__ = bn_classes[type(m)]
        elif type(m) is nn.Conv2d and _is_pointwise(m):
            swapped.append((m, m.__class__))
            m.__class__ = thread_invariant_pointwise_conv_class()
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        for m, cls in swapped:
            m.__class__ = cls


def record(deterministic: bool | None = None, with_torch: bool = True) -> dict:
    """What a stage's numbers depend on besides its inputs: for provenance files.
    `deterministic`: what the stage will ask of torch (default: the process's current
    setting, which an earlier stage in the same process may have left). `with_torch=False`
    for the stages that compute with NumPy and SciPy alone (map, bench)."""
    import numpy as np

    out = {"numpy": np.__version__, "machine": platform.machine(), "environment": pinned_variables()}
    if with_torch:
        import torch

        out.update(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()
                if deterministic is None
                else deterministic,
            }
        )
    else:
        import scipy

        out.update({"scipy": scipy.__version__, "cpus": os.cpu_count()})
    return out
