"""The image store: zarr `images[site, channel, y, x]`, chunked per site, with the site table beside it.

Layout of a store folder:
    zarr.json            group attributes: channels, dtype, scaling, source, provenance, `complete`
    images/              uint8 or uint16 array (n_sites, n_channels, height, width), one chunk per site
    intensity_range/     float32 (n_sites, n_channels, 2): the (lo, hi) each image was scaled with
    sites/               the site table (row i describes images[i]), a zarr group in AnnData's
                         dataframe encoding (`anndata.io.read_elem` reads it); stores written
                         before it hold sites.parquet instead, which is still read
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, why
from .direct_io import write_new_file

STORE_FORMAT = "morphoscale-image-store/1"
IMAGE_DIMENSIONS = ("site", "channel", "y", "x")
RANGE_DIMENSIONS = ("site", "channel", "bound")


def write_site_table(group, sites: pd.DataFrame) -> None:
    """The site table inside the store's zarr hierarchy, as AnnData encodes a dataframe: every
    zarr tool sees a group of 1-D arrays (a parquet file there is 'not a component of a Zarr
    hierarchy' to them, a warning on every listing)."""
    import warnings

    from anndata.io import write_elem

    table = sites.reset_index(drop=True).copy()
    for col in table.columns:
        if isinstance(table[col].dtype, pd.StringDtype) or table[col].dtype == object:
            table[col] = table[col].astype(object).where(table[col].notna(), "").astype(str).astype(object)
    table.index = table.index.astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr's note on its future default sharding
        write_elem(group, "sites", table)


def read_site_table(path: Path) -> pd.DataFrame:
    if (path / "sites" / "zarr.json").is_file():
        import zarr
        from anndata.io import read_elem

        table = read_elem(zarr.open_group(path / "sites", mode="r"))
        return table.reset_index(drop=True)
    return pd.read_parquet(path / "sites.parquet")


_BLOSC_MAX_OVERHEAD = 16


def blosc_codec(dtype: str = "uint8"):
    from zarr.codecs import BloscCodec

    # lz4: fast enough that compression never limits ingest. uint16 planes are byte-shuffled.
    # uint8 planes are not shuffled: bit-shuffling them wrote 17% fewer bytes of the JUMP
    # field but cost 1.6 ms more to compress a site (7.7 ms) and 1.5 ms more to decompress
    # one (3.6 ms), which every training crop pays; with writes past the page cache the
    # bytes themselves cost little CPU (benchmarks/bench_ingest.py, BENCHMARKS.md).
    return BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle" if dtype == "uint8" else "shuffle")


class SiteChunks:
    """Reads and writes whole per-site chunks of the `images` array straight from and to their files.

    The same bytes zarr reads and writes (raw little-endian C order, then Blosc), without
    zarr's async machinery, which costs several times the codec itself on a small machine:
    35 ms against 10 ms to write a JUMP site (benchmarks/bench_ingest.py), 2 ms against
    0.2 ms to read a 6 x 128 x 128 site, for every training crop. Each chunk lands
    atomically (temporary name, then rename), so a killed writer never leaves a torn chunk.
    """

    def __init__(self, array_path: str | Path):
        import zarr
        from numcodecs import Blosc
        from numcodecs import blosc as _blosc
        from zarr.codecs import BloscCodec, BytesCodec

        self.path = Path(array_path)
        arr = zarr.open_array(self.path, mode="r")
        self.metadata = arr.metadata
        codecs = arr.metadata.codecs
        ok = len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], BloscCodec)
        if not ok or tuple(arr.chunks[1:]) != tuple(arr.shape[1:]) or arr.chunks[0] != 1:
            raise ValueError(f"{self.path}: SiteChunks needs one Blosc-compressed chunk per site")
        if np.dtype(arr.dtype).byteorder == ">":
            raise ValueError("big-endian stores are not supported")
        blosc = codecs[1]
        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[
            blosc.shuffle.value
        ]
        _blosc.set_nthreads(1)  # one process per core already
        self.codec = Blosc(cname=blosc.cname.value, clevel=blosc.clevel, shuffle=shuffle, blocksize=blosc.blocksize)
        self.shape = tuple(arr.shape[1:])
        self.dtype = np.dtype(arr.dtype)
        self.fill_value = arr.fill_value

    def chunk_file(self, i: int) -> Path:
        return self.path / self.metadata.encode_chunk_key((int(i),) + (0,) * len(self.shape))

    def read(self, i: int, missing_ok: bool = True) -> np.ndarray:
        """Site i decoded. A chunk never written is zarr's fill value where `missing_ok`, else
        FileNotFoundError."""
        try:
            data = self.chunk_file(i).read_bytes()
        except FileNotFoundError:  # zarr's rule for a chunk never written
            if not missing_ok:
                raise
            return np.full(self.shape, self.fill_value, self.dtype)
        site = np.empty(self.shape, self.dtype)  # writable, decoded in place
        problem = self._header_problem(data[:16], len(data))
        if problem:
            raise ValueError(problem)
        self.codec.decode(data, out=site)
        return site

    def _header_problem(self, header: bytes, size: int) -> str | None:
        """Blosc's header says how many bytes the frame holds and decodes to; the decoder trusts
        it, so a truncated or foreign file would decode into garbage (or past its end)."""
        if size < 16:
            return f"{size} bytes, shorter than a Blosc header"
        nbytes, cbytes = int.from_bytes(header[4:8], "little"), int.from_bytes(header[12:16], "little")
        site_bytes = self.dtype.itemsize * int(np.prod(self.shape))
        if cbytes != size or nbytes != site_bytes:
            return (
                f"truncated or not this store's: {size} bytes on disk, the header says {cbytes} bytes decoding "
                f"to {nbytes} (a site is {site_bytes})"
            )
        return None

    def damage(self, i: int) -> str | None:
        """What is wrong with site i's chunk as far as its size and header tell (no decoding):
        None for a sound one."""
        try:
            with open(self.chunk_file(i), "rb") as f:
                header = f.read(16)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return "is missing"
        except OSError as e:
            return f"cannot be read ({e.strerror})"
        problem = self._header_problem(header, size)
        return f"cannot be decoded ({problem})" if problem else None

    @property
    def max_chunk_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.shape)) + _BLOSC_MAX_OVERHEAD

    def encode(self, site: np.ndarray, out: memoryview) -> int:
        """Compress a site into `out` (from `aligned_buffer`, at least `max_chunk_bytes`);
        returns the chunk's length. The same Blosc frame numcodecs writes; imagecodecs
        because it compresses into a given buffer."""
        import imagecodecs

        if site.shape != self.shape or site.dtype != self.dtype:
            raise ValueError(f"got {site.shape} {site.dtype}, the store holds {self.shape} {self.dtype}")
        c = self.codec
        return len(
            imagecodecs.blosc_encode(
                np.ascontiguousarray(site),
                c.clevel,
                compressor=c.cname,
                shuffle=c.shuffle,
                typesize=self.dtype.itemsize,
                blocksize=c.blocksize or None,
                numthreads=1,
                out=np.frombuffer(out, np.uint8),
            )
        )

    def put(self, i: int, buf: memoryview, n: int) -> None:
        """Store buf[:n], an encoded chunk, as site i's chunk file: a temporary name, then a rename."""
        target = self.chunk_file(i)
        if target.parent != self.path:  # nested chunk names (stores made before flat ones)
            target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            write_new_file(tmp, buf, n)
            os.replace(tmp, target)
        except BaseException:  # a full disk, an interrupt: the temporary goes too
            tmp.unlink(missing_ok=True)
            raise


class ImageStore:
    """Read access to a complete store. Cheap to pickle: DataLoader workers reopen it lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        import zarr

        if not (self.path / "zarr.json").exists():
            if Path(str(self.path) + ".partial").exists():
                raise InputError(f"{self.path}: the store is incomplete (an ingest is unfinished; re-run it to resume)")
            raise InputError(f"{self.path}: not an image store (no zarr.json)")
        try:
            group = zarr.open_group(self.path, mode="r")
            attrs = dict(group.attrs)
        except Exception as e:  # torn JSON, a file of another kind: zarr's own error is a traceback
            raise InputError(
                f"{self.path / 'zarr.json'}: cannot be read ({why(e, 120)}); the store is damaged"
            ) from None
        if attrs.get("format") != STORE_FORMAT:
            raise InputError(f"{self.path}: not a morphoscale image store (format {attrs.get('format')!r})")
        if not attrs.get("complete"):
            raise InputError(f"{self.path}: the store is incomplete (an ingest is unfinished; re-run it to resume)")
        self.attrs = attrs
        self.channels: list[str] = list(attrs["channels"])
        self._images = None
        self._chunks: SiteChunks | None = None
        self._sites: pd.DataFrame | None = None
        self.blank_sites: frozenset[int] = frozenset()  # read as blank images (--missing blank|skip)
        try:
            arr = group["images"]
        except Exception as e:
            where = self.path / "images" / "zarr.json"
            raise InputError(f"{where}: cannot be read ({why(e, 120)}); the store is damaged") from None
        self.shape = tuple(arr.shape)  # (n_sites, C, H, W)
        self.dtype = np.dtype(arr.dtype)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = None
        state["_chunks"] = None
        return state

    @property
    def images(self):
        if self._images is None:
            import zarr

            self._images = zarr.open_array(self.path / "images", mode="r")
        return self._images

    @property
    def sites(self) -> pd.DataFrame:
        if self._sites is None:
            try:
                sites = read_site_table(self.path)
            except Exception as e:
                raise InputError(
                    f"{self.path}: the site table cannot be read ({why(e, 120)}); the store is damaged"
                ) from None
            if len(sites) != self.shape[0]:
                raise InputError(
                    f"{self.path}: the site table has {len(sites)} rows for {self.shape[0]} sites; the store is damaged"
                )
            self._sites = sites
        return self._sites

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    def channel_indices(self, names: list[str] | None) -> list[int]:
        """Indices of the named channels, in the order given; unknown names are an error."""
        if names is None:
            return list(range(len(self.channels)))
        unknown = [n for n in names if n not in self.channels]
        if unknown:
            raise InputError(
                f"{self.path}: unknown channel(s) {', '.join(unknown)}; the store has {', '.join(self.channels)}"
            )
        return [self.channels.index(n) for n in names]

    def read(self, i: int, channels: list[int] | None = None) -> np.ndarray:
        """One whole site, (C, H, W)."""
        if self._chunks is None:
            self._chunks = SiteChunks(self.path / "images")
        site = self._site(i)
        if channels is None or list(channels) == list(range(site.shape[0])):
            return site  # all channels in order: no copy
        return site[channels]

    def damaged_sites(self) -> dict[int, str]:
        """{site: what is wrong} for every site whose chunk is missing, truncated or another
        store's (its size and Blosc header; 16 bytes read per site)."""
        if self._chunks is None:
            self._chunks = SiteChunks(self.path / "images")
        found = {}
        for i in range(len(self)):
            problem = self._chunks.damage(i)
            if problem:
                found[i] = f"site {i}'s image chunk {self._chunks.chunk_file(i).relative_to(self.path)} {problem}"
        return found

    def _site(self, i: int) -> np.ndarray:
        """A complete store has every chunk: a missing or undecodable one is damage, said in one
        line naming the site and the file, never read as a blank image (unless the caller said
        so for these sites, `blank_sites`: `--missing blank|skip`)."""
        if i in self.blank_sites:
            return np.full(self._chunks.shape, self._chunks.fill_value, self._chunks.dtype)
        try:
            return self._chunks.read(i, missing_ok=False)
        except FileNotFoundError:
            what = "is missing (the store is damaged; ingest it again)"
        except (RuntimeError, ValueError, TypeError) as e:
            what = f"cannot be decoded ({why(e, 120)}; the store is damaged)"
        raise InputError(
            f"{self.path}: site {i}'s image chunk {self._chunks.chunk_file(i).relative_to(self.path)} {what}"
        )

    def identity(self) -> str:
        """What this store holds, in 16 hex digits: its attributes (ingest's fingerprint of the
        source table and config among them), shape and every site's intensity range (computed
        from the pixels). A store rebuilt from other inputs or other images has another identity,
        so a resumed job (embed, features) never mixes chunks of the old store into the new."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.attrs, sort_keys=True, default=str).encode())
        h.update(f"{self.shape} {self.dtype}".encode())
        h.update(np.ascontiguousarray(self.intensity_range()).tobytes())
        return h.hexdigest()[:16]

    def intensity_range(self) -> np.ndarray:
        import zarr

        return zarr.open_array(self.path / "intensity_range", mode="r")[:]
