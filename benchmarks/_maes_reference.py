"""The reference's training step, built from a local checkout of recursionpharma/maes_microscopy
(not shipped with morphoscale): its MAEEncoder, MAEDecoder / CAMAEDecoder, masking, sin-cos
position embeddings and Fourier loss, combined the way its README and mae_modules.py say to
(an encoder-decoder linear projection, a prediction head, MSE on the masked patches + 0.01 x
Fourier). The public repository has no assembled training module, so this composition is
the reference's side of the side by side; the architecture differences are visible in the
FLOPs column (its encoder uses ParallelScalingBlock with QK-norm, its CA decoder one
decoder per channel after a cross-attention).

    git clone https://github.com/recursionpharma/maes_microscopy ~/.cache/morphoscale/maes_microscopy
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn as nn

DEFAULT = Path.home() / ".cache" / "morphoscale" / "maes_microscopy"


def load(path: Path = DEFAULT):
    """The checkout as the package `maes_microscopy` (its modules import each other relatively)."""
    path = Path(path)
    if not (path / "mae_modules.py").exists():
        return None
    if "maes_microscopy" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "maes_microscopy",
            path / "__init__.py" if (path / "__init__.py").exists() else path / "mae_modules.py",
            submodule_search_locations=[str(path)],
        )
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["maes_microscopy"] = pkg
    import importlib as il

    return {m: il.import_module(f"maes_microscopy.{m}") for m in ("mae_modules", "vit", "mae_utils", "loss")}


class ReferenceMAE(nn.Module):
    """A ViT-S/16 at 256 px MAE from the reference's parts; channel_agnostic: its CA-MAE."""

    def __init__(
        self,
        ref: dict,
        channel_agnostic: bool,
        in_chans: int = 6,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
    ):
        super().__init__()
        vit, mods = ref["vit"], ref["mae_modules"]
        self.ref, self.ca, self.mask_ratio, self.chans, self.patch = ref, channel_agnostic, mask_ratio, in_chans, 16
        backbone = vit.vit_small_patch16_256(in_chans=in_chans)
        if not channel_agnostic:
            backbone = vit.sincos_positional_encoding_vit(backbone)
        self.encoder = mods.MAEEncoder(backbone, max_in_chans=in_chans, channel_agnostic=channel_agnostic)
        self.proj = nn.Linear(self.encoder.embed_dim, decoder_dim)
        if channel_agnostic:
            self.decoder = mods.CAMAEDecoder(
                num_modalities=in_chans,
                tokens_per_modality=256,
                embed_dim=decoder_dim,
                depth=decoder_depth,
                num_heads=decoder_heads,
            )
        else:
            self.decoder = mods.MAEDecoder(embed_dim=decoder_dim, depth=decoder_depth, num_heads=decoder_heads)
        self.decoder.pos_embeddings = vit.generate_2d_sincos_pos_embeddings(
            decoder_dim, length=16, use_class_token=True, num_modality=in_chans if channel_agnostic else 1
        )
        self.pred = nn.Linear(decoder_dim, self.patch**2 * (1 if channel_agnostic else in_chans))
        self.fourier = ref["loss"].FourierLoss(num_multimodal_modalities=in_chans if channel_agnostic else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        utils = self.ref["mae_utils"]
        latent, mask, restore = self.encoder.forward_masked(x, self.mask_ratio)
        pred = self.pred(self.decoder.forward_masked(self.proj(latent), restore))[:, 1:]
        target = utils.flatten_images(x, self.patch, channel_agnostic=self.ca)
        mse = ((pred - target) ** 2).mean(-1)
        loss = (mse * mask).sum() / mask.sum()
        image = utils.unflatten_tokens(
            pred, self.patch, num_modalities=self.chans if self.ca else 1, channel_agnostic=self.ca
        )
        return loss + 0.01 * self.fourier(image.float(), x.float()).mean()
