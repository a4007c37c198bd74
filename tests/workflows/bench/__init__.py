"""Tests of the speed bench (systems, reports, CLI)."""
