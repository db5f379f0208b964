"""The room API's one error shape: ``{"error": {"code", "message"}}`` with an HTTP status."""

from __future__ import annotations

import math

from aiohttp import web

from signaling.auth import json_error
from signaling.protocol import ErrorCode, HubError

#: How hub error codes surface over HTTP.
HUB_STATUS: dict[ErrorCode, int] = {
    ErrorCode.ROOM_NOT_FOUND: 404,
    ErrorCode.CALL_NOT_FOUND: 404,
    ErrorCode.TRACK_NOT_FOUND: 404,
    ErrorCode.NOT_IN_ROOM: 404,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.ROOM_FULL: 409,
    ErrorCode.UNAVAILABLE: 503,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    @classmethod
    def from_hub(cls, exc: HubError) -> ApiError:
        return cls(HUB_STATUS.get(exc.code, 400), exc.code.value, exc.message)

    @classmethod
    def rate_limited(cls, retry_after: float, limit: float) -> ApiError:
        return cls(
            429,
            "rate_limited",
            f"more than {limit:g} requests per second for this API key",
            **{"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    def response(self) -> web.Response:
        return json_error(self.status, self.code, self.message, **self.headers)
