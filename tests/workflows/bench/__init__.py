"""Tests of the speed bench (systems, timing, worker protocol, CLI)."""
