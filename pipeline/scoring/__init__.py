"""Scoring against ground truth (DESIGN §7): the RIS metrics and the pseudo-label evaluation."""
