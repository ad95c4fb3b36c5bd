"""Per-image transforms shared by every paradigm: self-standardization, augmentation, multi-crop.

All work on float tensors (C, H, W) and draw randomness from an explicit
`torch.Generator`, so a dataset item is a pure function of (index, seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch


def self_standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Z-score each channel of each image over its own H x W (no learned affine).

    Works on (C, H, W) or (N, C, H, W). A flat channel becomes zeros.
    """
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


INPUT_NORMS = ("self", "instance", "mean_std")


@dataclass(frozen=True)
class InputNorm:
    """How an encoder wants its pixels, as the code it was trained with prepared them:

    - `self`: morphoscale's own models: each crop and channel z-scored in the store's units
      (`self_standardize`, std + 1e-6);
    - `instance`: OpenPhenom's predict: pixels / full scale, then torch's InstanceNorm per crop
      and channel (biased variance, eps inside the square root, in those units);
    - `mean_std`: timm's ImageNet-style checkpoints: pixels / full scale, then (x - mean) / std
      per channel.

    The full scale is the store's largest value (255 for uint8, 65535 for uint16: a uint16
    image is read as the same image converted linearly to 8 bits would be), set by `for_dtype`.
    """

    kind: str = "self"
    eps: float = 1e-6
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    full_scale: float = 255.0

    def for_dtype(self, dtype) -> "InputNorm":
        import numpy as np

        return replace(self, full_scale=float(np.iinfo(np.dtype(dtype)).max))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) or (N, C, H, W) pixels -> float32, as the encoder expects them."""
        if self.kind == "self":
            return self_standardize(x, self.eps)
        x = x.float() / self.full_scale
        if self.kind == "instance":
            return torch.nn.functional.instance_norm(x.reshape(-1, *x.shape[-3:]), eps=self.eps).reshape(x.shape)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def describe(self) -> dict:
        """For provenance and the resume key: every number that changes the embedding."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        return {"kind": "self", "eps": self.eps} if self.kind == "self" else d


SELF_STANDARDIZE = InputNorm()


@dataclass(frozen=True)
class Augment:
    """Random flips, 90-degree rotations, Gaussian blur and per-channel intensity jitter.

    `Augment.none()` is the identity; `Augment.random()` is the default random strategy.
    """

    flips: bool = True
    rot90: bool = True
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jitter: float = 0.0  # per channel: x * U(1-j, 1+j) + U(-j, j), after standardization

    @classmethod
    def none(cls) -> "Augment":
        return cls(flips=False, rot90=False)

    @classmethod
    def random(cls) -> "Augment":
        return cls(flips=True, rot90=True, blur_p=0.3, jitter=0.1)

    @property
    def is_identity(self) -> bool:
        return not (self.flips or self.rot90 or self.blur_p > 0 or self.jitter > 0)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(g, x.shape[-3]))

    def draw(self, g: torch.Generator, channels: int) -> torch.Tensor:
        """The random choices of one augmentation, drawn from `g` (in this order): flip x,
        flip y, quarter turns, blur sigma (0: none), then per-channel scales and shifts.
        float64, so the sigma a Python float held is kept exactly."""
        c = channels
        p = torch.zeros(4 + 2 * c, dtype=torch.float64)
        p[4 : 4 + c] = 1.0

        def u() -> float:
            return float(torch.rand((), generator=g))

        if self.flips:
            p[0] = float(u() < 0.5)
            p[1] = float(u() < 0.5)
        if self.rot90:
            p[2] = int(torch.randint(0, 4, (), generator=g))
        if self.blur_p > 0 and u() < self.blur_p:
            lo, hi = self.blur_sigma
            p[3] = lo + (hi - lo) * u()
        if self.jitter > 0:
            p[4 : 4 + c] = 1 + self.jitter * (2 * torch.rand(c, generator=g) - 1)
            p[4 + c :] = self.jitter * (2 * torch.rand(c, generator=g) - 1)
        return p

    @staticmethod
    def apply(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """One image (C, H, W) augmented as drawn."""
        c = x.shape[-3]
        x = dihedral(x, bool(p[0]), bool(p[1]), int(p[2]))
        if p[3] > 0:
            x = gaussian_blur(x, float(p[3]))
        scale, shift = p[4 : 4 + c].float(), p[4 + c :].float()
        if not (torch.all(scale == 1) and torch.all(shift == 0)):
            x = x * scale.view(c, 1, 1).to(x.device) + shift.view(c, 1, 1).to(x.device)
        return x.contiguous()


def dihedral(x: torch.Tensor, flip_x: bool, flip_y: bool, turns: int) -> torch.Tensor:
    """Flips and quarter turns over the last two axes (one image or a batch), in Augment's order."""
    if flip_x:
        x = x.flip(-1)
    if flip_y:
        x = x.flip(-2)
    if turns:
        x = torch.rot90(x, turns, dims=(-2, -1))
    return x


def standardize_and_augment(raw: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """A batch of raw crops (N, C, h, w; any dtype, on any device) self-standardized and
    augmented with the choices drawn on the CPU (`Augment.draw`, one row per crop): what the
    dataset does per crop, done where the batch is (a GPU), on the whole batch at once."""
    x = self_standardize(raw)
    n, c = x.shape[:2]
    params = params.detach().cpu()
    out = torch.empty_like(x)
    # the dihedral part, one batched op per distinct (flip x, flip y, turns)
    keys = params[:, :3].to(torch.int64)
    for key in torch.unique(keys, dim=0):
        rows = torch.nonzero((keys == key).all(dim=1)).flatten().to(x.device)
        out.index_copy_(0, rows, dihedral(x.index_select(0, rows), bool(key[0]), bool(key[1]), int(key[2])))
    for i in torch.nonzero(params[:, 3] > 0).flatten().tolist():  # blur: its own sigma per crop
        out[i] = gaussian_blur(out[i], float(params[i, 3]))
    scale = params[:, 4 : 4 + c].float().view(n, c, 1, 1).to(x.device)
    shift = params[:, 4 + c :].float().view(n, c, 1, 1).to(x.device)
    return (out * scale + shift).contiguous()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, reflect padding, kernel radius ceil(3 sigma)."""
    radius = max(1, int(torch.ceil(torch.tensor(3 * sigma))))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[-3]
    y = x.reshape(-1, c, *x.shape[-2:])
    y = torch.nn.functional.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.reshape(x.shape)


@dataclass(frozen=True)
class MultiCrop:
    """Global and local views of one site (crop sizes in pixels)."""

    global_size: int
    n_global: int = 2
    local_size: int = 0
    n_local: int = 0

    def sizes(self) -> list[int]:
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local
