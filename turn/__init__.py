"""TURN support: short-lived coturn credentials (TURN REST API) and a hardened config.

This package is empty until the TURN issue lands; the signaling hub does not depend on it.
"""
