"""Ranking measures, TREC files and paired statistics: pure numpy, knows no model."""
