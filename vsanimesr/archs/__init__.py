"""Pure network definitions (no I/O)."""

from vsanimesr.archs.animesr import AnimeSRNet

__all__ = ["AnimeSRNet"]
