"""Server use cases: admission, devices, artifacts, deployments and the rollout engine.

Services take an ``AsyncSession`` and plain values or wire objects, raise the
domain errors of ``fleetcast.server.errors`` and commit their own
transactions. They know nothing of HTTP.
"""
