"""Workflows: multi-step jobs built on the engine (train, evaluate, md, precision, interop).

``quickstart`` (the demo), ``precision_audit``, ``bench`` (speed and memory, peers included) and
``distill`` (teacher -> student). Nothing below this tier imports it.
"""
