"""Whole-shape search over sharp membranes, with the ensemble the data cannot separate.

``ShapeSearch(grid, target, SearchConfig()).run(run_dir)`` → :class:`SearchResult`; see
:mod:`spinverse.recon.search.engine` for the stages.
"""

from spinverse.recon.search.config import EnsembleConfig, SearchConfig
from spinverse.recon.search.engine import SearchResult, ShapeSearch
from spinverse.recon.search.ensemble import Ensemble
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator, RegionModel

__all__ = ["SearchConfig", "EnsembleConfig", "ShapeSearch", "SearchResult", "Ensemble",
           "RegionSpace", "RegionModel", "Evaluator"]
