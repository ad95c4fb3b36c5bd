"""Readers turn a source layout (RxRx, JUMP load_data, generic CSV) into a validated `SourceTable`."""

from __future__ import annotations

from .base import SourceTable, check_illumination, check_images, locate, read_illumination
from .csv_table import read_csv_source
from .jump import read_jump
from .rxrx import RXRX_CHANNELS, read_rxrx

READERS = {"rxrx": read_rxrx, "jump": read_jump, "csv": read_csv_source}

__all__ = [
    "READERS",
    "RXRX_CHANNELS",
    "SourceTable",
    "check_illumination",
    "check_images",
    "locate",
    "read_illumination",
    "read_csv_source",
    "read_jump",
    "read_rxrx",
]
