"""Encoders shared by the baselines: the MIDL 2022 simple CNN, torchvision ResNet/DenseNet,
and timm ViTs, each taking C channels and returning one embedding vector per image.

Every backbone is an `nn.Module` with `forward(x) -> (N, dim)` (what the classifier head,
projector or decoder reads in training), an attribute `dim`, and `readout(x, layer,
pooling)`, the embedding (models/readout.py: pooled, never position-indexed). None of them loads
pretrained weights: nothing may be downloaded here, and ImageNet weights expect 3 RGB
channels, not 5 or 6 fluorescence channels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .readout import StagedReadout, pick_layer


class MIDLSimpleCNN(StagedReadout, nn.Module):
    """The simple CNN of Dmitrenko et al. (MIDL 2022), for C channels: conv C->64, pool,
    conv 64->32, pool, conv 32->16, conv 16->8 (3x3, same padding, ReLU). A 64x64 input
    gives an 8x16x16 map: the 2048-d flattened embedding. Single-channel encoder: 24,888
    parameters. `width` scales every layer (1 = the paper)."""

    def __init__(self, in_chans: int = 1, img_size: int = 64, width: float = 1.0):
        super().__init__()
        w = [max(1, int(round(c * width))) for c in (64, 32, 16, 8)]
        self.widths = w
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, w[0], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w[0], w[1], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w[1], w[2], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w[2], w[3], 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.grid = img_size // 4
        self.dim = w[3] * self.grid * self.grid

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each conv + ReLU (4 stages; a max-pool starts the next one)."""
        out = []
        for m in self.features:
            x = m(x)
            if isinstance(m, nn.ReLU):
                out.append(x)
        return out


class MIDLSimpleDecoder(nn.Module):
    """Mirror of MIDLSimpleCNN: 8x16x16 -> C x 64 x 64 (nearest upsampling, linear output)."""

    def __init__(self, encoder: MIDLSimpleCNN, out_chans: int):
        super().__init__()
        w = encoder.widths
        self.shape = (w[3], encoder.grid, encoder.grid)
        self.layers = nn.Sequential(
            nn.Conv2d(w[3], w[2], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w[2], w[1], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(w[1], w[0], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(w[0], out_chans, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.reshape(z.shape[0], *self.shape))


class TorchvisionCNN(StagedReadout, nn.Module):
    """A torchvision ResNet or DenseNet, random init, its stem widened to C channels; the
    embedding is the global-average-pooled last feature map (the classifier's input).
    `small_stem` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (CIFAR-style), for
    crops of 64 px and less."""

    def __init__(self, arch: str, in_chans: int, small_stem: bool = False):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if arch.startswith("resnet"):
            net.conv1 = nn.Conv2d(
                in_chans, net.conv1.out_channels, *((3, 1, 1) if small_stem else (7, 2, 3)), bias=False
            )
            if small_stem:
                net.maxpool = nn.Identity()
            self.dim = net.fc.in_features
            net.fc = nn.Identity()
            self.net = net
        else:  # densenet: features -> relu -> pool
            f = net.features
            f.conv0 = nn.Conv2d(in_chans, f.conv0.out_channels, *((3, 1, 1) if small_stem else (7, 2, 3)), bias=False)
            if small_stem:
                f.pool0 = nn.Identity()
            self.dim = net.classifier.in_features
            self.net = nn.Sequential(f, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ResNet: the outputs of layer1..layer4; DenseNet: of each dense block (+ transition)
        and, last, the final feature map after its norm and ReLU (what forward pools)."""
        out = []
        if hasattr(self.net, "layer1"):
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            for name in ("layer1", "layer2", "layer3", "layer4"):
                x = getattr(n, name)(x)
                out.append(x)
            return out
        features, relu = self.net[0], self.net[1]
        for name, m in features.named_children():
            x = m(x)
            if name.startswith("transition"):
                out.append(x)
        out.append(relu(x))
        return out


class TimmViT(nn.Module):
    """A timm VisionTransformer for C channels; embedding = mean of patch tokens (after the norm)."""

    def __init__(self, size: str, patch: int, img_size: int, in_chans: int, drop_path: float = 0.0):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        d, depth, heads = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}[size]
        self.net = VisionTransformer(
            img_size=img_size,
            patch_size=patch,
            in_chans=in_chans,
            num_classes=0,
            embed_dim=d,
            depth=depth,
            num_heads=heads,
            global_pool="avg",
            drop_path_rate=drop_path,
            dynamic_img_size=True,
        )
        self.dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def readout(self, x: torch.Tensor, layer: int = -1, pooling: str = "mean") -> torch.Tensor:
        """Block `layer`'s tokens, mean of patch tokens or cls; at the last block normalized as
        forward does (timm's avg pool: fc_norm after the mean)."""
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling '{pooling}' is not defined for a ViT (mean or cls)")
        n = len(self.net.blocks)
        k = pick_layer(n, layer)
        tokens = self.net.forward_intermediates(
            x, indices=[k], norm=k == n - 1, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
        patches, prefix = tokens[0]
        pooled = patches.mean(dim=1) if pooling == "mean" else prefix[:, 0]
        return self.net.fc_norm(pooled) if k == n - 1 else pooled


BACKBONES = (
    "midl_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "densenet161",
    "vit_tiny_patch8",
    "vit_tiny_patch16",
    "vit_small_patch16",
    "vit_base_patch16",
)


def create_backbone(
    name: str, in_chans: int, img_size: int, width: float = 1.0, small_stem: bool = False, drop_path: float = 0.0
) -> nn.Module:
    if name == "midl_cnn":
        if img_size % 4:
            raise ConfigError(f"key 'img_size': the MIDL CNN needs a multiple of 4, not {img_size}")
        return MIDLSimpleCNN(in_chans, img_size, width)
    if name.startswith(("resnet", "densenet")) and name in BACKBONES:
        return TorchvisionCNN(name, in_chans, small_stem)
    if name.startswith("vit_") and name in BACKBONES:
        _, size, patch = name.split("_")
        return TimmViT(size, int(patch[5:]), img_size, in_chans, drop_path)
    raise ConfigError(f"key 'backbone': unknown backbone '{name}'; known: {', '.join(BACKBONES)}")


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
