"""Tests of equiforce.o3."""
