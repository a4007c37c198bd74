"""Tests of equiforce.kernels."""
