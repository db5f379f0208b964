"""TURN: short-lived coturn credentials for clients (:mod:`turn.credentials`), the
hardened coturn config rendered from the ``[turn]`` settings (:mod:`turn.config`), and the
reachability probe ``/health`` reports (:mod:`turn.health`).

Above :mod:`config` only: the hub and the SFU use it; it uses neither.
"""
