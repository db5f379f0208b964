"""Uploading finished recordings to S3-compatible storage (AWS S3, MinIO, Ceph, ...), when
configured: every file and the manifest go under ``<prefix><recording id>/`` in the
bucket, off the event loop (boto3's transfer manager on a thread). The local copies are
removed once uploaded unless ``recording_s3_keep_local``.

boto3 is an optional dependency (``pip install switchboard[s3]``), imported only when a
bucket is configured.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("switchboard.recording")


@dataclass(frozen=True, slots=True)
class S3Target:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    keep_local: bool = True


class S3Uploader:
    def __init__(self, target: S3Target) -> None:
        import boto3  # optional: only with a bucket configured

        self.target = target
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=target.endpoint_url,
            region_name=target.region,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
        )

    async def upload(self, directory: Path, recording_id: str) -> dict[str, Any]:
        """Upload a recording's directory; ``{"bucket", "keys"}`` or ``{"bucket", "error"}``."""
        try:
            keys = await asyncio.to_thread(self._upload, directory, recording_id)
        except Exception as exc:  # storage away, refused credentials: the files stay here
            log.warning(
                "recording not uploaded", extra={"recording": recording_id, "error": str(exc)}
            )
            return {"bucket": self.target.bucket, "error": str(exc)[:300]}
        return {"bucket": self.target.bucket, "keys": keys}

    def _upload(self, directory: Path, recording_id: str) -> list[str]:
        keys = []
        for path in sorted(directory.iterdir()):
            key = f"{self.target.prefix}{recording_id}/{path.name}"
            self._client.upload_file(str(path), self.target.bucket, key)
            keys.append(key)
        if not self.target.keep_local:
            shutil.rmtree(directory, ignore_errors=True)
        return keys
