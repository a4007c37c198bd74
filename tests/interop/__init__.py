"""Tests of equiforce.interop."""
