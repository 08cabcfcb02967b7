"""Sweeps and ablations over many cases, arms, seeds and noise levels, on Dask."""
