"""The device's TUF client (ADR 0008): director check, image agreement, version reports.

With ``[trust]`` configured, before the agent acts on an offer it:

1. gets a nonce and sends a signed version report (in the agent's process,
   which holds the device key; :mod:`~fleetcast.agent.trust.report`);
2. runs a short-lived child process, ``python -m fleetcast.agent.trust``,
   that refreshes the director and image repositories with
   ``tuf.ngclient.Updater`` over the agent's HTTP settings (token, CA pin;
   :mod:`~fleetcast.agent.trust.fetcher`, :mod:`~fleetcast.agent.trust.repos`),
   checks the director's metadata names this device, the nonce just reported
   and exactly one target for the offered deployment, and that the image
   repository holds that target with the same length and hashes
   (:mod:`~fleetcast.agent.trust.verify`); the answer is one JSON verdict
   (:mod:`~fleetcast.agent.trust.protocol`);
3. holds the offer to the verified target: device type, release counter,
   manifest hash, artifact size and hash (:mod:`~fleetcast.agent.trust.check`);
4. downloads the artifact bounded by the target length and checks its sha256
   before the trial boot is armed (:mod:`~fleetcast.agent.trust.artifact`);
5. at commit, records the target and its release counter (slot record, or
   :mod:`~fleetcast.agent.trust.installed` for in-place artifacts).

Why a child process: ``tuf.ngclient`` with securesystemslib and urllib3 costs
about 12 MB of resident memory, and the idle agent must stay under 40 MB.
The agent's process imports only the light modules of this package
(``protocol``, ``check``, ``report``, ``artifact``, ``installed``); ``fetcher``,
``repos``, ``verify``, ``__main__`` and ``conformance`` import ``tuf`` and run
only in the child or in ``fleetcast-tuf-client`` (the tuf-conformance CLI,
built on the same updater configuration and fetcher).

This ``__init__`` imports nothing.
"""

from __future__ import annotations
