"""What one running app holds: database, blob store, notifier, engine, keys, last-seen buffer.

Created in the app's lifespan (never at import time) and kept on
``app.state.fleetcast``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcast.server.answers import AnswerCache
from fleetcast.server.blobs import BlobStore
from fleetcast.server.db.engine import Database
from fleetcast.server.lastseen import LastSeen
from fleetcast.server.notify import Notifier
from fleetcast.server.priming import OfferPrimer
from fleetcast.server.rollout.engine import RolloutEngine
from fleetcast.server.services.admission import AdmissionPolicy
from fleetcast.server.services.deltas import DeltaWorker
from fleetcast.server.settings import Settings


@dataclass
class ServerState:
    settings: Settings
    db: Database
    blobs: BlobStore
    notifier: Notifier
    engine: RolloutEngine
    admission: AdmissionPolicy
    trusted_keys: list[Ed25519PublicKey]
    last_seen: LastSeen
    deltas: DeltaWorker
    answers: AnswerCache
    primer: OfferPrimer
