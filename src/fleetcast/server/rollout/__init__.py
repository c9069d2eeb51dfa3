"""Phased rollouts: the deployment plan (pure) and the engine that drives it.

See ``docs/adr/0002-rollout-semantics.md`` for the rules.
"""
