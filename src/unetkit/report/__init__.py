"""Plots, overlays and the HTML report of a run."""
