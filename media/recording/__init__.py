"""Recording without transcoding: a group call's forwarded RTP, put back in order, made
into whole frames (VP8 depacketized; an Opus packet is a frame) and muxed as it is into
WebM (video) and Ogg (audio) files, one per track, with a manifest that aligns them.

The per-packet part (:mod:`media.recording.track_recorder`) only copies what it needs and
queues it; the files are written on a thread (:mod:`media.recording.writer`), so a slow
disk never delays forwarding: a full queue or a write error marks the recording damaged.
"""
