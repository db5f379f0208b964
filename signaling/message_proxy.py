"""Chat messages over the socket, persisted by the chat backend (a publish proxy).

``message:send`` from a room member is POSTed to ``message_backend_url``, signed the
Standard Webhooks way with the API secret, carrying the user id, the connection id, a
request id and an ``Idempotency-Key`` of user and ``tempId``. The backend persists the
message and answers ``{"message": {"id", ...}}``, which Switchboard broadcasts as
``message:new`` to the conversation (encoded once), or ``{"error": {"code", "message"}}``
with a 4xx status. The sender's connection gets ``message:sent {tempId, messageId}`` or
``message:error {tempId, code, message}``.

The backend is never awaited on the sender's request path: the request is acked as
accepted and the outcome arrives as an event, so a slow or failing backend cannot hold
up the other events of that connection, nor anyone else's. At most
``message_backend_concurrency`` requests are in flight and ``message_backend_queue`` wait;
beyond that ``message:send`` is refused (``unavailable``) and the client retries with the
same ``tempId``. A ``tempId`` seen again (a resend after a reconnect, to any node) within
``message_dedupe_ttl`` is answered with the first send's outcome and never reaches the
backend or the room twice: the shared state keeps a claim per (user, tempId)
(:mod:`signaling.state.sent_messages`). The ``Idempotency-Key`` lets the backend do the
same for what Switchboard cannot see (a Redis that lost its keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from signaling.protocol import ErrorCode, HubError
from signaling.state.sent_messages import PENDING
from signaling.webhooks.signing import sign

if TYPE_CHECKING:
    from signaling.events import MessageSend
    from signaling.metrics import HubMetrics
    from signaling.state.delivery import Fanout
    from signaling.state.sent_messages import SentMessages
    from signaling.websocket import Connection

log = logging.getLogger("switchboard.messages")


class BackendRefusal(Exception):
    """The backend answered, but not with a message: ``code`` goes to the sender."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MessageProxy:
    def __init__(
        self,
        *,
        url: str | None,
        secret: str | None,
        sent: SentMessages,
        fanout: Fanout,
        metrics: HubMetrics,
        timeout: float,
        concurrency: int,
        queue: int,
        max_content_bytes: int,
        dedupe_ttl: float,
    ) -> None:
        self.url = url
        self.secret = secret
        self.sent = sent
        self.fanout = fanout
        self.metrics = metrics
        self.timeout = timeout
        self.max_content_bytes = max_content_bytes
        self.dedupe_ttl = dedupe_ttl
        self._slots = asyncio.Semaphore(concurrency)
        self._capacity = concurrency + queue
        self._outstanding = 0
        #: (user, tempId) -> the task sending it from this node, while it runs.
        self._inflight: dict[tuple[str, str], asyncio.Task[dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.url is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def stop(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    # -- the event ---------------------------------------------------------------------------

    async def on_send(self, conn: Connection, payload: MessageSend) -> dict[str, Any]:
        if self.url is None:
            raise HubError(
                ErrorCode.MESSAGES_DISABLED,
                "this server has no message backend; send messages through your chat backend",
            )
        room_id = payload.conversationId
        if room_id not in conn.rooms:
            raise HubError(ErrorCode.NOT_IN_ROOM, f"join conversation '{room_id}' first")
        size = len(payload.content.encode())
        if size > self.max_content_bytes:
            raise HubError(
                ErrorCode.INVALID_PAYLOAD,
                f"data.content: {size} bytes exceeds the limit of {self.max_content_bytes}",
            )
        key = (conn.user_id, payload.tempId)
        running = self._inflight.get(key)
        if running is not None:  # sent from this node, still with the backend
            self.metrics.messages.labels("duplicate").inc()
            self._answer_when_done(conn, payload.tempId, running)
            return {"tempId": payload.tempId, "duplicate": True}
        if self._outstanding >= self._capacity:
            self.metrics.messages.labels("busy").inc()
            raise HubError(
                ErrorCode.UNAVAILABLE,
                f"the message backend is busy ({self._outstanding} requests outstanding); "
                "retry with the same tempId",
            )
        known = await self.sent.claim(conn.user_id, payload.tempId, self.dedupe_ttl)
        if known is None:
            task = self._start(key, self._send(conn, payload))
        else:
            self.metrics.messages.labels("duplicate").inc()
            task = self._start(key, self._first_outcome(conn, payload, known))
        self._answer_when_done(conn, payload.tempId, task)
        return {"tempId": payload.tempId, **({"duplicate": True} if known else {})}

    def _start(
        self, key: tuple[str, str], work: Coroutine[Any, Any, dict[str, Any]]
    ) -> asyncio.Task[dict[str, Any]]:
        self._outstanding += 1
        task = asyncio.ensure_future(work)
        self._inflight[key] = task

        def finished(_: asyncio.Task[dict[str, Any]]) -> None:
            self._outstanding -= 1
            if self._inflight.get(key) is task:
                del self._inflight[key]

        task.add_done_callback(finished)
        return task

    async def _first_outcome(
        self, conn: Connection, payload: MessageSend, known: str
    ) -> dict[str, Any]:
        """A resend: the first send's message id, once it has one. If that send failed
        meanwhile (its claim was released), this one claims and sends it instead."""
        deadline = time.monotonic() + self.timeout + 1.0
        while known == PENDING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            try:
                claimed = await self.sent.claim(conn.user_id, payload.tempId, self.dedupe_ttl)
            except HubError as exc:
                return {"code": exc.code.value, "message": exc.message}
            if claimed is None:
                return await self._send(conn, payload)
            known = claimed
        if known == PENDING:
            return {
                "code": "backend_timeout",
                "message": "the first send of this tempId is "
                "still with the message backend; retry with the same tempId",
            }
        return {"messageId": known}

    def _answer_when_done(
        self, conn: Connection, temp_id: str, task: asyncio.Task[dict[str, Any]]
    ) -> None:
        def answer(done: asyncio.Task[dict[str, Any]]) -> None:
            if done.cancelled():
                return
            if done.exception() is not None:
                log.error("message:send failed", exc_info=done.exception())
                outcome: dict[str, Any] = {"code": "internal_error", "message": "internal error"}
            else:
                outcome = done.result()
            if "messageId" in outcome:
                conn.send("message:sent", {"tempId": temp_id, "messageId": outcome["messageId"]})
            else:
                conn.send("message:error", {"tempId": temp_id, **outcome})

        task.add_done_callback(answer)

    # -- the backend -------------------------------------------------------------------------

    async def _send(self, conn: Connection, payload: MessageSend) -> dict[str, Any]:
        """The outcome for the sender: ``{"messageId"}`` or ``{"code", "message"}``."""
        try:
            async with self._slots:
                message = await self._post(conn, payload)
        except BackendRefusal as exc:
            self.metrics.messages.labels(
                exc.code if exc.code.startswith("backend_") else "refused"
            ).inc()
            # Not persisted: a resend may try again.
            with contextlib.suppress(HubError):
                await self.sent.release(conn.user_id, payload.tempId)
            return {"code": exc.code, "message": exc.message}
        except BaseException:
            with contextlib.suppress(HubError):
                await self.sent.release(conn.user_id, payload.tempId)
            raise
        self.metrics.messages.labels("sent").inc()
        with contextlib.suppress(HubError):  # the shared state is away: resends may repeat
            await self.sent.settle(
                conn.user_id, payload.tempId, str(message["id"]), self.dedupe_ttl
            )
        room_id = payload.conversationId
        try:
            await self.fanout.to_room_recorded(
                room_id,
                "message:new",
                {**message, "conversationId": room_id, "tempId": payload.tempId},
            )
        except HubError as exc:  # persisted, but the shared state is away: members reload
            log.warning("message:new not broadcast", extra={"code": exc.code, "room": room_id})
        return {"messageId": message["id"]}

    async def _post(self, conn: Connection, payload: MessageSend) -> dict[str, Any]:
        assert self._session is not None and self.url is not None and self.secret is not None
        request_id = "req_" + secrets.token_hex(12)
        body = orjson.dumps(
            {
                "type": "message.send",
                "requestId": request_id,
                "userId": conn.user_id,
                "name": conn.name,
                "connectionId": conn.id,
                "conversationId": payload.conversationId,
                "tempId": payload.tempId,
                "content": payload.content,
                "messageType": payload.messageType,
                "replyTo": payload.replyTo,
                "metadata": payload.metadata,
            }
        )
        headers = {
            **sign(self.secret, request_id, int(time.time()), body),
            "Content-Type": "application/json",
            "Idempotency-Key": f"{conn.user_id}:{payload.tempId}",
        }
        started = time.perf_counter()
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise BackendRefusal(
                "backend_timeout", f"the message backend did not answer in {self.timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendRefusal(
                "backend_unavailable", f"the message backend is unreachable: {exc}"
            ) from None
        finally:
            self.metrics.message_backend_seconds.observe(time.perf_counter() - started)
        return _outcome(status, raw)


def _outcome(status: int, raw: bytes) -> dict[str, Any]:
    """The message a 2xx answer carries, or the refusal a 4xx (or anything else) means."""
    try:
        answer = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        answer = None
    if 200 <= status < 300:
        message = answer.get("message") if isinstance(answer, dict) else None
        if isinstance(message, dict) and isinstance(message.get("id"), str | int):
            return message
        raise BackendRefusal(
            "backend_invalid_response", 'the message backend did not answer {"message": {"id"}}'
        )
    if 400 <= status < 500 and isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        code = error.get("code")
        if isinstance(code, str) and 0 < len(code) <= 64:
            return_message = error.get("message")
            text = return_message if isinstance(return_message, str) else code
            raise BackendRefusal(code, text[:500])
    kind = "backend_refused" if 400 <= status < 500 else "backend_error"
    raise BackendRefusal(kind, f"the message backend answered HTTP {status}")
