"""OpenPhenom through `morphoscale embed --weights` against the reference's own code.

    .venv/bin/python benchmarks/openphenom_reference.py --reference CHECKOUT --reference-env SITE [--out DIR]

CHECKOUT: recursionpharma/maes_microscopy at branch huggingface_phenombeta (not shipped with
morphoscale, not fetched by this script). SITE: a folder of the packages its requirements.txt
pins for the code it runs, installed with `pip install --target SITE --no-deps timm==1.0.11
transformers==4.45.2 hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
huggingface-hub==0.26.1 tokenizers==0.20.1 safetensors==0.4.5 requests urllib3 certifi idna
charset-normalizer regex tqdm`; torch and numpy are this environment's (the reference pins
torch 2.5.0; nothing measured here depends on torch's version, timm's is the point).

1. Six 512 px uint8 sites from the real JUMP pilot field (`morphoscale datasets get
   jump-pilot-field`): its five channels at four places, scaled to uint8 as ingest does, and a
   dim sixth (its DNA converted linearly to 8 bits: a few grey levels of spread, where the
   normalization's eps and units matter). They are written as an RxRx-layout screen and
   ingested into a store.
2. In a subprocess under SITE + CHECKOUT (morphoscale not imported there): the reference's
   `MAEModel` from its Phenom-Beta config (`models/phenom_beta_huggingface/config.json`),
   every encoder weight drawn at a trained-like scale (LayerScale about 0.5, every bias and
   `mlp_bias` std 0.05, matrices std fan_in^-1/2, norms about 1: timm's own init leaves
   LayerScale at 1e-4 and mlp_bias at 0, which hides the bias routing), saved with its own
   `save_pretrained` (config.json and a torch pickle named model.safetensors, as the Hub
   holds OpenPhenom); then its predict on the sites' four 256 px tiles: its `input_norm`
   (/ 255, InstanceNorm), `encoder.vit_backbone` (forward_features, or the blocks up to K for
   an intermediate layer), the mean of the patch tokens (or each channel's mean).
3. `morphoscale embed --weights DIR/checkpoint/model.safetensors` on the store, crop and site
   level, for each case; site = the mean of its tiles on both sides.

Printed (and written to DIR/table.md): per case and level, the largest absolute difference,
the largest difference relative to the embedding's norm (max_i ||ours_i - ref_i||_inf /
||ref_i||_2), and the smallest cosine; once as embed reads OpenPhenom now (legacy bias
routing, OpenPhenom's input normalization) and once with `--mlp-bias fixed --input-norm self`
(what it did before: the pinned timm's routing, self-standardization in the store's units).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TILE, SITE = 256, 512
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito", "DNAlinear8"]
# (name, channel indices into CHANNELS, pooling, layer)
CASES = [
    ("6 channels, mean, last block", [0, 1, 2, 3, 4, 5], "mean", -1),
    ("5 of 6 channels, another order", [4, 2, 0, 5, 1], "mean", -1),
    ("6 channels, per channel", [0, 1, 2, 3, 4, 5], "per_channel", -1),
    ("6 channels, mean, block 6 of 12 (--layer 5)", [0, 1, 2, 3, 4, 5], "mean", 5),
]


# ---------------------------------------------------------------- the reference's side
def reference_side(out: Path, checkout: Path, seed: int) -> None:
    """Runs under the reference's packages: build, weight, save and embed with its own code."""
    import numpy as np
    import timm
    import torch

    sys.path.insert(0, str(checkout))
    from huggingface_mae import MAEConfig, MAEModel

    torch.manual_seed(seed)
    model = MAEModel(MAEConfig.from_pretrained(str(checkout / "models" / "phenom_beta_huggingface")))
    vit = model.encoder.vit_backbone
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name == "pos_embed":
                continue  # fixed sin-cos
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.05 * torch.randn_like(p))
            elif p.ndim > 1:
                p.copy_(torch.randn_like(p) * p[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.05 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(ckpt))
    # its from_pretrained does torch.load(path): torch >= 2.6 reads a '.safetensors' path as
    # safetensors, so load the same file through a file object, as its own code then would
    with open(ckpt / "model.safetensors", "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=False)["state_dict"]
    model = MAEModel(MAEConfig.from_pretrained(str(ckpt)))
    model.load_state_dict(state)
    model.eval()
    vit = model.encoder.vit_backbone

    sites = torch.from_numpy(np.load(out / "sites.npz")["sites"])  # (n, 6, 512, 512) uint8
    tiles = torch.stack([sites[:, :, y : y + TILE, x : x + TILE] for y in (0, TILE) for x in (0, TILE)], dim=1).flatten(
        0, 1
    )  # (n * 4, 6, 256, 256), each site's tiles in row-major order

    def predict(imgs: torch.Tensor, pooling: str, layer: int) -> torch.Tensor:
        x = model.input_norm(imgs)
        if layer == -1:
            tokens = vit.forward_features(x)
        else:
            tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
            for blk in vit.blocks[: layer + 1]:
                tokens = blk(tokens)
        patches = tokens[:, 1:]
        if pooling == "per_channel":
            n, c = imgs.shape[:2]
            return patches.reshape(n, c, -1, patches.shape[-1]).mean(dim=2).reshape(n, -1)
        return patches.mean(dim=1)

    result = {}
    with torch.inference_mode():
        for k, (_, chans, pooling, layer) in enumerate(CASES):
            result[f"case{k}"] = torch.cat([predict(b, pooling, layer) for b in tiles[:, chans].split(8)]).numpy()
    versions = {"timm": timm.__version__, "torch": torch.__version__, "block": type(vit.blocks[0]).__module__}
    np.savez(out / "reference.npz", versions=json.dumps(versions), **result)


# ---------------------------------------------------------------- morphoscale's side
def write_sites(out: Path, field: Path) -> None:
    """Six 512 px uint8 sites of the real JUMP field, an RxRx-layout screen of them, a store."""
    import numpy as np
    from PIL import Image

    from morphoscale.data.images import read_image, scale_to_uint8
    from morphoscale.data.ingest import ingest, load_ingest_config

    raw = [read_image(p) for p in sorted(field.glob("r01c01f01p01-ch*sk1fk1fl1.tiff"))]
    if len(raw) != 5:
        raise SystemExit(
            f"{field}: the JUMP pilot field's five channels not found (morphoscale datasets get jump-pilot-field)"
        )
    origins = [(0, 0), (0, 540), (540, 0), (540, 540), (280, 280), (100, 400)]
    sites = np.empty((len(origins), 6, SITE, SITE), np.uint8)
    for s, (y, x) in enumerate(origins):
        for c, img in enumerate(raw):
            sites[s, c] = scale_to_uint8(np.ascontiguousarray(img[y : y + SITE, x : x + SITE]), (0.1, 99.9))[0]
        sites[s, 5] = raw[0][y : y + SITE, x : x + SITE] // 257
    np.savez(out / "sites.npz", sites=sites)
    screen = out / "screen"
    rows = []
    for s in range(len(sites)):
        well = f"B{s + 2:02d}"
        folder = screen / "images" / "EXP-1" / "Plate1"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(6):
            Image.fromarray(sites[s, c]).save(folder / f"{well}_s1_w{c + 1}.png")
        kind = ("negative_control", "EMPTY") if s == 0 else ("treatment", f"s{s}")
        rows.append(f"EXP-1_1_{well}_1,EXP-1_1_{well},U2OS,train,EXP-1,1,{well},1,{kind[0]},{kind[1]}")
    head = "site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna"
    (screen / "metadata.csv").write_text("\n".join([head, *rows]) + "\n")
    cfg = {"format": "rxrx", "source": str(screen), "channels": CHANNELS, "workers": 1}
    ingest(load_ingest_config(None, cfg), out / "store.zarr", overwrite=True, progress=False)


def ours(out: Path, k: int, level: str, **reading):
    import anndata as ad

    from morphoscale.embed import embed

    _, chans, pooling, layer = CASES[k]
    name = out / f"ours_{k}_{level}_{'_'.join(f'{v}' for v in reading.values()) or 'now'}.h5ad"
    embed(
        None,
        out / "store.zarr",
        name,
        layer=layer,
        pooling=pooling,
        level=level,
        channels=[CHANNELS[c] for c in chans],
        batch_size=8,
        overwrite=True,
        progress=False,
        weights=out / "checkpoint" / "model.safetensors",
        **reading,
    )
    return ad.read_h5ad(name).X.astype("float64")


# how embed reads the weights: now; before this change; each of the two causes alone (first case only)
READINGS = [
    ({}, "now: legacy routing, instance norm"),
    ({"mlp_bias": "fixed", "input_norm": "self"}, "before: fixed routing, self-standardized"),
    ({"mlp_bias": "fixed"}, "fixed routing only"),
    ({"input_norm": "self"}, "self-standardized only"),
]


def agreement(a, b) -> tuple[float, float, float]:
    import numpy as np

    diff = np.abs(a - b)
    rel = (diff.max(axis=1) / np.linalg.norm(b, axis=1)).max()
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(diff.max()), float(rel), float(cos.min())


def compare(out: Path) -> str:
    import numpy as np

    ref = np.load(out / "reference.npz")
    versions = json.loads(str(ref["versions"]))
    lines = [
        f"Reference: maes_microscopy `MAEModel` under timm {versions['timm']}, torch {versions['torch']}; "
        f"{len(np.load(out / 'sites.npz')['sites'])} sites of the JUMP pilot field, 4 tiles each.",
        "",
        "| case | level | reading | max abs diff | max diff / norm | min cosine |",
        "|---|---|---|---:|---:|---:|",
    ]
    for k, (name, *_) in enumerate(CASES):
        crops = ref[f"case{k}"]
        sites = crops.reshape(-1, 4, crops.shape[-1]).mean(axis=1)
        for reading, label in READINGS[: None if k == 0 else 2]:
            for level, expect in (("crop", crops), ("site", sites)):
                a, r, c = agreement(ours(out, k, level, **reading), expect.astype("float64"))
                lines.append(f"| {name} | {level} | {label} | {a:.2e} | {r:.2e} | {c:.7f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reference", type=Path, required=True, help="a checkout of maes_microscopy (huggingface_phenombeta)"
    )
    ap.add_argument("--reference-env", type=Path, help="the folder of the reference's pinned packages (pip --target)")
    ap.add_argument("--out", type=Path, default=Path("runs/openphenom_reference"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_side:
        return reference_side(args.out, args.reference.resolve(), args.seed)

    import morphoscale  # noqa: F401  (pins the numeric libraries' kernels, as the CLI does)
    from morphoscale.data.examples import cache_dir

    if not (args.reference / "huggingface_mae.py").exists():
        raise SystemExit(f"{args.reference}: no huggingface_mae.py (check out branch huggingface_phenombeta)")
    args.out.mkdir(parents=True, exist_ok=True)
    write_sites(args.out, cache_dir() / "jump-pilot-field")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p.resolve()) for p in (args.reference_env, args.reference) if p),
    }
    cmd = [sys.executable, __file__, "--reference-side", "--reference", str(args.reference), "--out", str(args.out)]
    subprocess.run([*cmd, "--seed", str(args.seed)], env=env, check=True)
    table = compare(args.out)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
