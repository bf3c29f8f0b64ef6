"""Flax models of the deep methods."""
