"""``[sfu]``: group calls: media sockets, timeouts, speaker detection, and what a node
hosts in a cluster (placement limits, reconnect grace, draining, the signaling relay)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr

from config.fields import CommaList


class SfuSettings(BaseModel):
    toml_table: ClassVar[str] = "sfu"
    toml_prefix: ClassVar[str] = "sfu_"

    sfu_room_capacity: int = Field(default=50, ge=2, le=500)
    sfu_listen_ips: CommaList = Field(default_factory=list)
    sfu_announced_ip: str | None = None
    sfu_udp_min_port: int = Field(default=40000, ge=1024, le=65535)
    sfu_udp_max_port: int = Field(default=49999, ge=1024, le=65535)
    sfu_use_ice_servers: bool = False
    sfu_ice_timeout: float = Field(default=20.0, gt=0)
    sfu_negotiation_timeout: float = Field(default=15.0, gt=0)
    sfu_keyframe_min_interval: float = Field(default=1.0, ge=0)
    # Simulcast: publishers pause the layers nobody watches (sfu:layers).
    sfu_dynacast: bool = True
    sfu_speaker_interval: float = Field(default=0.3, gt=0)
    sfu_speaker_threshold_dbov: int = Field(default=60, ge=0, le=127)
    # Large rooms: above this many participants (0: never) only the N loudest microphones
    # are forwarded, each for `hangover` seconds after it was last among them.
    sfu_audio_loudest_above: int = Field(default=20, ge=0)
    sfu_audio_loudest: int = Field(default=3, ge=1, le=50)
    sfu_audio_hangover: float = Field(default=1.0, ge=0)
    # Subscribers' downlinks: share each one's estimate (REMB) among its videos, starting
    # from this many bits/s until its first report; off: every video gets what it asks for.
    sfu_bandwidth_estimation: bool = True
    # Publishers' uplinks: at most this many bits/s per participant, all tracks together
    # (0: no cap; the room API sets caps per room and per user below this).
    sfu_max_publish_bitrate: int = Field(default=0, ge=0)
    sfu_start_bitrate: int = Field(default=600_000, ge=50_000)
    sfu_stats_log_interval: float = Field(default=30.0, ge=0)
    # Forwarded packets leave through the compiled writer (media/_rtpsend.c: header,
    # SRTP and send in one C call), and a steady subscriber's whole per-packet step is
    # compiled with it (media/_lane.c, _pace.c), when the install built them; false: Python.
    sfu_compiled_writer: bool = True
    # Media placement in a cluster (0: no limit) and what survives a lost node.
    sfu_host_rooms: bool = True
    sfu_max_rooms: int = Field(default=0, ge=0)
    sfu_max_participants: int = Field(default=0, ge=0)
    sfu_max_cpu: float = Field(default=0.0, ge=0)
    sfu_reconnect_grace: float = Field(default=20.0, ge=0)
    # recordings (media/recording/): where the files go, and how many frames per file
    # may wait for the disk before frames are dropped (the file is then marked damaged)
    recording_dir: Path = Path("recordings")
    recording_queue_frames: int = Field(default=1000, ge=10)
    # optional upload of finished recordings to S3-compatible storage (needs boto3)
    recording_s3_bucket: str | None = None
    recording_s3_prefix: str = ""
    recording_s3_endpoint: str | None = None  # e.g. https://minio.example.com:9000
    recording_s3_region: str = "us-east-1"
    recording_s3_access_key: str | None = None
    recording_s3_secret_key: SecretStr | None = None
    recording_s3_keep_local: bool = True
    sfu_drain_deadline: float = Field(default=300.0, ge=0)
    sfu_relay_timeout: float = Field(default=10.0, gt=0)
