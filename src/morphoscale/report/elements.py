"""The pieces every report section is made of: images as data URIs (a report is one file
that can be mailed or opened offline), tables, channel composites."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

PALETTE = {
    "DNA": (0.2, 0.4, 1.0),
    "ER": (0.1, 1.0, 0.2),
    "RNA": (1.0, 1.0, 0.1),
    "AGP": (1.0, 0.2, 0.2),
    "Actin": (1.0, 0.2, 0.2),
    "Mito": (1.0, 0.3, 1.0),
    "Golgi": (1.0, 0.6, 0.1),
}
FALLBACK = [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2), (1.0, 1.0, 0.1), (1.0, 0.3, 1.0), (0.1, 1.0, 1.0)]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_img(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure_img(fig, alt: str, width: int | None = None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return png_img(buf.getvalue(), alt, width)


def file_img(path: Path, alt: str, width: int | None = None) -> str:
    return png_img(Path(path).read_bytes(), alt, width) if Path(path).exists() else ""


def array_img(rgb: np.ndarray, alt: str, scale: int = 1, max_side: int = 512) -> str:
    from PIL import Image

    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    if max(im.size) > max_side:  # a microscope field: shown smaller, the file stays small
        f = max_side / max(im.size)
        im = im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return png_img(buf.getvalue(), alt)


def html_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A table with `digits` decimals, except counts: a column of whole numbers (pairs, wells;
    float only because a cell is missing) is written without decimals, not 50.000."""
    df = df.map(lambda v: np.nan if v is None else v).infer_objects()
    for col in df.columns:
        vals = df[col]
        if (
            pd.api.types.is_float_dtype(vals)
            and vals.notna().any()
            and (vals.dropna() % 1 == 0).all()
            and (vals.dropna().abs() > 1).any()
        ):
            df[col] = vals.map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0, classes="t", na_rep="n/a")


def scaled(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [1, 99.5])
    return np.clip((x.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def composite(site: np.ndarray, channels: list[str]) -> np.ndarray:
    """Additive colour composite of all channels (C, H, W) -> (H, W, 3)."""
    rgb = np.zeros((*site.shape[1:], 3), np.float32)
    for k, name in enumerate(channels):
        rgb += scaled(site[k])[..., None] * np.asarray(PALETTE.get(name, FALLBACK[k % len(FALLBACK)]), np.float32)
    return np.clip(rgb / max(1.0, len(channels) / 3), 0, 1)
