"""Tests of spinverse.recon."""
