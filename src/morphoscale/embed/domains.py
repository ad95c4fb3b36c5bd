"""AdaBN at embedding time: each experimental batch's images pass through BatchNorm layers
holding that batch's own statistics (models/adabn.py), estimated on a seeded sample of its sites."""

from __future__ import annotations

import numpy as np

ADABN_SITES = 256  # sites per experimental batch that estimate its BatchNorm statistics


def adabn_states(model, store, tiles, channels, batch_size, device) -> tuple[np.ndarray, dict]:
    """AdaBN: BatchNorm statistics of each experimental batch, estimated on the tiles of up
    to ADABN_SITES of its sites (a seeded sample). Returns (batch code per site, states)."""
    from torch.utils.data import DataLoader

    from ..data.datasets import TileDataset, column_codes
    from ..models.adabn import estimate_batchnorm_state

    codes, _ = column_codes(store, "batch")
    states = {}
    for d in np.unique(codes):
        sites = np.flatnonzero(codes == d)
        if len(sites) > ADABN_SITES:
            sites = np.sort(np.random.default_rng(int(d)).choice(sites, ADABN_SITES, replace=False))
        sub = TileDataset(
            store, tiles.tile_size, tiles.stride, channels=channels, sites=sites, normalize=tiles.normalize
        )
        images = (b["image"].to(device) for b in DataLoader(sub, batch_size=batch_size))
        states[int(d)] = estimate_batchnorm_state(model, images, forward=model.encoder)
    return codes, states


def embed_per_domain(model, forward, x, domains, sites, kwargs) -> np.ndarray:
    from ..models.adabn import load_batchnorm_state

    codes, states = domains
    out = None
    tile_domains = codes[sites]
    for d in np.unique(tile_domains):
        rows = np.flatnonzero(tile_domains == d)
        load_batchnorm_state(model, states[int(d)])
        e = forward(x[rows], **kwargs).float().cpu().numpy()
        if out is None:
            out = np.empty((len(x), e.shape[1]), np.float32)
        out[rows] = e
    return out
