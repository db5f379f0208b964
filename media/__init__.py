"""Selective forwarding unit (group calls) on aiortc.

Planned responsibility: one peer connection per participant, RTP forwarded without
decoding. This package is empty until the SFU issue lands; the signaling hub does not
depend on it.
"""
