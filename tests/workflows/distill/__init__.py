"""Tests of equiforce.workflows.distill."""
