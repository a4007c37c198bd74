"""Tests of equiforce.distill."""
