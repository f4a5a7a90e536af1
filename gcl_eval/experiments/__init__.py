"""Presets, suites and the run pipeline (train if needed, then evaluate) as library code."""
