"""Tests of the measurement module (timing, memory, worker protocol, machine facts)."""
