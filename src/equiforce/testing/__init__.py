"""Shipped test kit: structures, tolerances, symmetry checks."""
