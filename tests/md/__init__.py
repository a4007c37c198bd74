"""Tests of equiforce.md: ASE calculator, MD driver, md CLI."""
