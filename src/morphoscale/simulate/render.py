"""Rendering one imaging site: cells from morphology parameters, then optics and a camera.

Each cell is drawn in its own bounding box and added to whole-image fields; textures
are band-limited noise made with FFTs. The six channels follow RxRx: DNA (Hoechst), ER
(concanavalin A), Actin (phalloidin), RNA / nucleoli (SYTO14), Mito (MitoTracker),
Golgi + plasma membrane (WGA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from .biology import PARAMETERS

CHANNELS = ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
_IDX = {name: i for i, name in enumerate(PARAMETERS)}


def _sig(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@dataclass
class Optics:
    """Technical (non-biological) conditions of one site."""

    gain: np.ndarray  # (6,) per-channel multiplicative gain (batch x plate)
    offset: np.ndarray  # (6,) per-channel additive background, in [0, 1] intensity units
    vignetting: float  # fraction of intensity lost at the corners
    focus_blur: float  # extra Gaussian blur sigma, px
    photons: float = 300.0  # expected photo-electrons at intensity 1 (shot noise)
    read_noise: float = 2.0  # electrons
    psf_sigma: float = 0.7  # px


ANGLES = np.linspace(0, np.pi, 4, endpoint=False)  # the orientations stress fibres are drawn at


@dataclass
class _Cells:
    """Where each cell of a site is and its shape (arrays of one value per cell)."""

    cy: np.ndarray
    cx: np.ndarray
    theta: np.ndarray  # orientation
    R: np.ndarray  # radius
    a: np.ndarray  # semi-axes
    b: np.ndarray
    rn0: np.ndarray  # nucleus radius, relative to the cell's
    necc: np.ndarray  # nucleus eccentricity
    multi: np.ndarray  # two nuclei
    ox: np.ndarray  # nucleus offset along the long axis
    wobble_amp: np.ndarray
    wobble_phase: np.ndarray
    bins: np.ndarray  # the fibre orientation (index into ANGLES)


@dataclass
class _Fields:
    """Whole-image fields the cells add up to, which the channels are made of."""

    boundary: np.ndarray
    nuc: np.ndarray
    cyto: np.ndarray
    perinuclear: np.ndarray
    fibre_weight: np.ndarray  # (orientations, S, S)
    centers: list  # (y, x, radius) of every nucleus


class Renderer:
    """Renders sites of a fixed size; caches the frequency grids and the vignetting field."""

    def __init__(self, size: int, cell_radius: float | None = None):
        self.size = S = size
        self.cell_radius = cell_radius or 14.0 * size / 128
        fy = sfft.fftfreq(S)[:, None]
        fx = sfft.rfftfreq(S)[None, :]
        self.f2 = (fx**2 + fy**2).astype(np.float32)
        self.fx, self.fy = (
            np.broadcast_to(fx, self.f2.shape).astype(np.float32),
            np.broadcast_to(fy, self.f2.shape).astype(np.float32),
        )
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
        self.yy, self.xx = yy, xx
        c = (S - 1) / 2
        self.r2 = (((yy - c) ** 2 + (xx - c) ** 2) / (2 * c * c)).astype(np.float32)

    # --- band-limited noise and blur in the Fourier domain -------------------------------

    def _gauss_filter(self, sigma: float) -> np.ndarray:
        return np.exp(-2 * (np.pi * sigma) ** 2 * self.f2)

    def blur(self, img: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return img
        return sfft.irfft2(sfft.rfft2(img) * self._gauss_filter(sigma), s=img.shape[-2:]).astype(np.float32)

    def noise(self, rng, sigma: float) -> np.ndarray:
        """Isotropic Gaussian-filtered white noise, unit variance."""
        n = sfft.irfft2(
            sfft.rfft2(rng.standard_normal((self.size, self.size), dtype=np.float32)) * self._gauss_filter(sigma),
            s=(self.size, self.size),
        )
        return (n / (n.std() + 1e-8)).astype(np.float32)

    def oriented_noise(self, rng, angle: float, along: float, across: float) -> np.ndarray:
        """Noise stretched along `angle` (fibres): long correlation `along`, short `across`, unit variance."""
        u = self.fx * np.cos(angle) + self.fy * np.sin(angle)
        v = -self.fx * np.sin(angle) + self.fy * np.cos(angle)
        filt = np.exp(-2 * np.pi**2 * ((u * along) ** 2 + (v * across) ** 2))
        n = sfft.irfft2(
            sfft.rfft2(rng.standard_normal((self.size, self.size), dtype=np.float32)) * filt, s=(self.size, self.size)
        )
        return (n / (n.std() + 1e-8)).astype(np.float32)

    def splat(self, ys, xs, weights, sigma: float) -> np.ndarray:
        """Gaussian spots at (ys, xs), by adding impulses and blurring once."""
        img = np.zeros((self.size, self.size), np.float32)
        ys = np.clip(np.round(ys).astype(int), 0, self.size - 1)
        xs = np.clip(np.round(xs).astype(int), 0, self.size - 1)
        np.add.at(img, (ys, xs), weights)
        return self.blur(img, sigma) * (2 * np.pi * sigma**2)

    # --- cells -------------------------------------------------------------------------

    def render(self, z: np.ndarray, optics: Optics, rng: np.random.Generator, n_cells_scale: float = 1.0) -> np.ndarray:
        """z: (P,) morphology parameters of the site. Returns (6, S, S) uint8. Every draw comes
        from `rng` in a fixed order (cells, shared textures, then channel by channel)."""
        S = self.size

        def g(name: str) -> float:
            return float(z[_IDX[name]])

        cells = self._place_cells(g, rng, n_cells_scale)
        f = self._paint_cells(cells)
        fine = self.noise(rng, 0.8)  # shared textures
        medium = self.noise(rng, 1.6)
        ch = np.zeros((6, S, S), np.float32)
        # DNA: nuclei with chromatin texture
        ch[0] = f.nuc * np.clip(0.75 + 0.25 * np.exp(0.35 * g("dna_texture")) * fine, 0.05, None)
        # ER: perinuclear reticulum, excluded from nuclei
        er_int = np.exp(0.3 * g("er_intensity"))
        er_tex = 0.45 * np.exp(0.35 * g("er_texture"))
        ch[1] = 0.55 * er_int * f.perinuclear * np.clip(0.7 + er_tex * self.noise(rng, 0.6), 0.0, None)
        ch[2] = self._actin(g, cells, f, rng)
        ch[3] = self._rna(g, f, rng)
        # Mito: filaments (oriented noise) or fragments (puncta) in the cytoplasm, perinuclear-weighted
        frag = _sig(1.3 * g("mito_fragmentation") - 0.5)
        filaments = np.clip(self.oriented_noise(rng, rng.uniform(0, np.pi), 3.0, 0.6), 0, None) + np.clip(
            self.oriented_noise(rng, rng.uniform(0, np.pi), 3.0, 0.6), 0, None
        )
        puncta = np.clip(medium - 0.8, 0, None) * 2.5
        ch[4] = 0.5 * f.perinuclear * ((1 - frag) * filaments + frag * puncta)
        ch[5] = self._golgi(g, f, rng)
        return self.camera(ch, optics, rng)

    # --- cells -------------------------------------------------------------------------

    def _place_cells(self, g, rng: np.random.Generator, n_cells_scale: float) -> "_Cells":
        """How many cells, where, and the shape of each cell and nucleus."""
        S, R0 = self.size, self.cell_radius
        # cell count and positions: a jittered grid, then a random subset
        density = (S / (2.1 * R0)) ** 2
        n = int(
            np.clip(
                rng.poisson(max(density * np.exp(0.35 * g("cell_count")) * n_cells_scale, 1.0)), 1, int(3 * density)
            )
        )
        k = int(np.ceil(np.sqrt(max(n, 1) * 1.3)))
        gy, gx = np.meshgrid((np.arange(k) + 0.5) * S / k, (np.arange(k) + 0.5) * S / k, indexing="ij")
        pick = rng.permutation(k * k)[:n]
        cy = gy.ravel()[pick] + rng.uniform(-0.35, 0.35, n) * S / k
        cx = gx.ravel()[pick] + rng.uniform(-0.35, 0.35, n) * S / k
        # per-cell shape: size (with cell-cycle variation), elongation, orientation
        coherence = _sig(1.2 * g("actin_coherence"))
        site_angle = rng.uniform(0, np.pi)
        theta = site_angle + (1 - coherence) * rng.uniform(-np.pi / 2, np.pi / 2, n)
        cycle = rng.uniform(0, 1, n)  # G1 -> G2: cells and nuclei grow
        R = R0 * np.exp(0.22 * g("cell_area") + 0.15 * rng.standard_normal(n)) * (0.85 + 0.3 * cycle)
        ecc = np.clip(0.1 + 0.35 * _sig(g("cell_eccentricity")) + 0.08 * rng.standard_normal(n), 0, 0.8)
        # nuclei: size and shape; some cells get two (multinucleation)
        rn0 = np.clip(
            0.42 * np.exp(0.22 * g("nucleus_area") + 0.1 * rng.standard_normal(n)) * (0.9 + 0.2 * cycle), 0.2, 0.75
        )
        necc = np.clip(0.05 + 0.3 * _sig(g("nucleus_eccentricity")) + 0.05 * rng.standard_normal(n), 0, 0.7)
        multi = rng.random(n) < _sig(1.5 * g("multinucleation") - 3.0)
        ox = rng.uniform(-0.15, 0.15, n) * R
        wobble_amp = rng.uniform(0.03, 0.12, (n, 3))
        wobble_phase = rng.uniform(0, 2 * np.pi, (n, 3))
        bins = np.argmin(np.abs(((theta[:, None] - ANGLES[None]) + np.pi / 2) % np.pi - np.pi / 2), axis=1)
        return _Cells(
            cy, cx, theta, R, R * (1 + ecc), R / (1 + ecc), rn0, necc, multi, ox, wobble_amp, wobble_phase, bins
        )

    def _paint_cells(self, c: "_Cells") -> "_Fields":
        """Each cell drawn in its own bounding box (soft masks: neighbours touch and overlap)
        and added to whole-image fields."""
        S = self.size
        f = _Fields(*(np.zeros((S, S), np.float32) for _ in range(4)), np.zeros((len(ANGLES), S, S), np.float32), [])
        for i in range(len(c.cy)):
            half = int(np.ceil(c.a[i] * 1.4)) + 2
            y0, y1 = max(int(c.cy[i]) - half, 0), min(int(c.cy[i]) + half + 1, S)
            x0, x1 = max(int(c.cx[i]) - half, 0), min(int(c.cx[i]) + half + 1, S)
            if y1 <= y0 or x1 <= x0:
                continue
            dy = self.yy[y0:y1, x0:x1] - c.cy[i]
            dx = self.xx[y0:y1, x0:x1] - c.cx[i]
            ci, si = np.cos(c.theta[i]), np.sin(c.theta[i])
            u, v = dx * ci + dy * si, -dx * si + dy * ci
            phi = np.arctan2(v, u)
            wobble = 1 + sum(
                c.wobble_amp[i, k] * np.cos(m * phi + c.wobble_phase[i, k]) for k, m in enumerate((2, 3, 5))
            )
            rc = np.sqrt((u / c.a[i]) ** 2 + (v / c.b[i]) ** 2) / wobble
            m_cell = _sig((1 - rc) * 10)
            m_nuc = np.zeros_like(m_cell)
            sides = (-1.0, 1.0) if c.multi[i] else (0.0,)
            scale = 0.75 if c.multi[i] else 1.0
            an, bn = c.rn0[i] * scale * c.R[i] * (1 + c.necc[i]), c.rn0[i] * scale * c.R[i] / (1 + c.necc[i])
            for side in sides:
                off = c.ox[i] + side * 0.55 * c.rn0[i] * c.R[i]
                rn = np.sqrt(((u - off) / an) ** 2 + (v / bn) ** 2) / (1 + 0.05 * np.cos(3 * phi))
                m_nuc = np.maximum(m_nuc, _sig((1 - rn) * 12))
                f.centers.append((c.cy[i] + off * si, c.cx[i] + off * ci, float(c.rn0[i] * scale * c.R[i])))
            m_cyto = np.clip(m_cell - m_nuc, 0, None)
            win = (slice(y0, y1), slice(x0, x1))
            f.boundary[win] += 4 * m_cell * (1 - m_cell)
            f.nuc[win] += m_nuc
            f.cyto[win] += m_cyto
            f.perinuclear[win] += m_cyto * np.exp(-1.5 * np.clip(rc - 0.3, 0, None))
            f.fibre_weight[c.bins[i]][win] += m_cell
        return f

    # --- channels with their own structures -----------------------------------------------

    def _actin(self, g, c: "_Cells", f: "_Fields", rng) -> np.ndarray:
        """Stress fibres along each cell's orientation, and a cortical rim."""
        dens = 0.55 * np.exp(0.35 * g("actin_density"))
        fibres = np.zeros((self.size, self.size), np.float32)
        for kb, ang in enumerate(ANGLES):
            if (c.bins == kb).any():
                fibres += f.fibre_weight[kb] * np.clip(self.oriented_noise(rng, ang, 6.0, 0.7), 0, None) ** 1.5
        return dens * fibres * (1 - 0.7 * np.clip(f.nuc, 0, 1)) + 0.35 * f.boundary

    def _rna(self, g, f: "_Fields", rng) -> np.ndarray:
        """Nucleoli (count and size) in nuclei, dim cytoplasm."""
        lam = 2.0 * np.exp(0.35 * g("nucleoli_count"))
        size = 0.9 * np.exp(0.3 * g("nucleoli_size")) * self.size / 128
        ys, xs, ws = [], [], []
        for y0, x0, rad in f.centers:
            kspots = rng.poisson(lam)
            if kspots:
                rr = rad * 0.55 * np.sqrt(rng.random(kspots))
                aa = rng.uniform(0, 2 * np.pi, kspots)
                ys.append(y0 + rr * np.sin(aa))
                xs.append(x0 + rr * np.cos(aa))
                ws.append(np.full(kspots, 1.0, np.float32))
        spots = (
            self.splat(np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), max(size, 0.5))
            if ys
            else np.zeros((self.size, self.size), np.float32)
        )
        return 0.18 * f.cyto + 0.25 * f.nuc + 0.9 * spots / max(size, 0.5) ** 0.5

    def _golgi(self, g, f: "_Fields", rng) -> np.ndarray:
        """Golgi (a compact ribbon beside the nucleus, or dispersed puncta) and the WGA membrane."""
        disp = _sig(1.3 * g("golgi_dispersion") - 0.5)
        ys, xs, ws = [], [], []
        for y0, x0, rad in f.centers:
            ang = rng.uniform(0, 2 * np.pi)
            npun = 1 + rng.poisson(1 + 8 * disp)
            spread = rad * (0.3 + 1.6 * disp)
            gy0, gx0 = y0 + (rad + 2) * np.sin(ang), x0 + (rad + 2) * np.cos(ang)
            ys.append(gy0 + spread * rng.standard_normal(npun) * 0.5)
            xs.append(gx0 + spread * rng.standard_normal(npun) * 0.5)
            ws.append(np.full(npun, 3.0 / npun**0.5, np.float32))
        golgi = (
            self.splat(np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), 1.2 * self.size / 128) if ys else 0
        )
        return 0.6 * golgi + 0.3 * f.boundary + 0.06 * f.cyto

    # --- optics and camera -------------------------------------------------------------

    def camera(self, ch: np.ndarray, o: Optics, rng) -> np.ndarray:
        sigma = float(np.hypot(o.psf_sigma, o.focus_blur))
        illum = 1.0 - o.vignetting * self.r2
        out = np.empty(ch.shape, np.uint8)
        for k in range(ch.shape[0]):
            signal = np.clip(self.blur(ch[k], sigma), 0, None) * illum * o.gain[k] + o.offset[k]
            electrons = signal * o.photons
            electrons = (
                electrons
                + np.sqrt(np.clip(electrons, 0, None)) * rng.standard_normal(electrons.shape, dtype=np.float32)
                + o.read_noise * rng.standard_normal(electrons.shape, dtype=np.float32)
            )
            out[k] = np.clip(electrons / o.photons * 160.0, 0, 255).astype(np.uint8)
        return out
