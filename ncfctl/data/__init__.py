"""Interaction data: sources, the synthetic generator, splits, and the dataset artifact."""
