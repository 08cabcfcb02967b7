"""Figures (matplotlib, imported lazily by the functions that draw)."""
