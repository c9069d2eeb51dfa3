"""Compatibility APIs: existing hawkBit-DDI and Mender fleets talk to Fleetcast as they are.

Devices keep their client (SWUpdate's suricatta, rauc-hawkbit-updater, the
Mender client) and only get a new server URL. Each protocol is a thin layer
over the same services the native agents use:

- admission: DDI and Mender devices are ``devices`` rows of another
  ``kind`` and go through the same pending / accepted / preauthorized
  states (``identity``);
- offers: ``fleetcast.server.services.updates.next_deployment`` picks the
  deployment and the artifact of the device's format;
- reports: every DDI feedback and Mender status becomes a
  ``StatusReport`` for ``updates.report_status``, so idempotency, history,
  phases and failure thresholds are shared.

Modules: ``ddi`` / ``ddi_service`` (hawkBit DDI API v1), ``mender`` /
``mender_service`` (Mender device API), ``manage`` (the operator's side:
preauthorizing, DDI target tokens), ``mender_artifact`` (the
``mender-artifact`` file format, pure), ``uploads`` (storing ``file`` and
``mender`` artifacts), and shared helpers: ``identity``, ``members``,
``files``, ``urls``. ADR 0006 explains the choices; ``docs/migrate.md`` is
the operator's guide.
"""

from __future__ import annotations
