"""Tests of spinverse.mesh."""
