"""The server side of ADR 0008: TUF image repository and Uptane-style director.

The operator signs roots, image ``targets`` and hash bins offline and
uploads them; the server verifies each upload with python-tuf and signs the
rest online:

* :mod:`~fleetcast.server.trust.keys`: the online keys (snapshot, timestamp,
  director), created at first use, rotated through a root that lists them;
* :mod:`~fleetcast.server.trust.store`: every version of every file, as exact bytes;
* :mod:`~fleetcast.server.trust.verify`: what an upload must satisfy;
* :mod:`~fleetcast.server.trust.uploads`: accepting roots, targets and bins;
* :mod:`~fleetcast.server.trust.online`: image snapshot and timestamp signing,
  and :mod:`~fleetcast.server.trust.refresh`, the background task re-signing them;
* :mod:`~fleetcast.server.trust.releases`: whether an artifact has an image target;
* :mod:`~fleetcast.server.trust.director`: per-device director metadata;
* :mod:`~fleetcast.server.trust.reports`: nonces and signed version reports.

A device's check: nonce → signed version report → director refresh (its one
target, and the report's nonce echoed) → image refresh → the director's
target must equal the image repository's. Nothing is imported here, so that
services can use one module without pulling in the others.
"""
