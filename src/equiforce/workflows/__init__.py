"""Workflows: multi-step jobs built on the engine (train, evaluate, md, precision, interop).

``quickstart`` (the demo), ``precision_audit``, ``bench`` (speed and memory, peers included),
``distill`` (teacher -> student), ``committee`` (N members of a run file), ``calibration`` (a
committee's force error vs its spread) and ``learn`` (active learning). Nothing below this tier
imports it.
"""
