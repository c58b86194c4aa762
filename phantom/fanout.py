"""The control API of ``workers = N``: served once, by the supervisor, for every worker.

Each worker serves its own control API on a Unix socket of its seat (``channel_path``); the
supervisor's :class:`FleetControl` checks the token (or that the call comes from a program)
exactly as a single process does, sends the call to every running worker and answers with the
merged result (:mod:`phantom.merging`; ``/metrics`` summed by :func:`phantom.metrics.
sum_expositions`). A worker whose socket does not answer the connection is not serving yet (or
is dead and being replaced): its cache is empty, so it is left out of an invalidation without
harm. A worker that accepts but does not answer in time fails the call (504), since its
cache may still hold what was to be removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Sequence

import h11

from .config import Config
from .control import ControlError, ControlRequest, ControlResponse, ControlServer
from .merging import merge_answers
from .messages import read_message
from .metrics import CONTENT_TYPE, sum_expositions

__all__ = ["FleetControl", "channel_path"]

log = logging.getLogger("phantom.control")

# Snapshot calls wait for the backend to render pages (as the control client does).
CALL_TIMEOUT = 120.0
METRICS_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def channel_path(directory: str, index: int) -> str:
    """The Unix socket of worker ``index``'s control API."""
    return os.path.join(directory, f"worker-{index}.sock")


class _NotServing(Exception):
    """The worker's socket is absent or refuses: it is not serving (yet)."""


class FleetControl:
    def __init__(
        self,
        config: Config,
        directory: str,
        seats: Callable[[], Sequence[int]],
        reloaded: Callable[[], None],
    ) -> None:
        assert config.control_port is not None
        self.directory = directory
        self.seats = seats  # the indexes of the workers running now
        self.reloaded = reloaded  # after the workers reloaded: the supervisor does too
        self.per_worker = config.metrics_per_worker
        self.server = ControlServer(
            config.control_listen, config.control_port, config.control_auth
        )
        self.server.route("GET", "/healthz", self.healthz, public=True)
        self.server.route("GET", "/metrics", self.metrics)
        self.server.route("POST", "/reload", self.reload)
        self.server.fallback(self.forward)

    @property
    def sockets(self) -> list[int]:
        return self.server.sockets

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    async def healthz(self, _: ControlRequest) -> ControlResponse:
        return ControlResponse.json(200, {"status": "ok", "workers": len(self.seats())})

    async def metrics(self, request: ControlRequest) -> ControlResponse:
        answers = await self._ask_all(request, METRICS_TIMEOUT)
        failed = next((answer for _, answer in answers if answer[0] != 200), None)
        if failed is not None:
            return ControlResponse(failed[0], failed[1])
        texts = [(index, body.decode()) for index, (_, body) in answers]
        return ControlResponse(200, sum_expositions(texts, self.per_worker).encode(), CONTENT_TYPE)

    async def reload(self, request: ControlRequest) -> ControlResponse:
        response = await self.forward(request)
        if response.status == 200:
            self.reloaded()
        return response

    async def forward(self, request: ControlRequest) -> ControlResponse:
        answers = await self._ask_all(request, CALL_TIMEOUT)
        decoded = []
        for index, (status, body) in answers:
            try:
                decoded.append((status, json.loads(body)))
            except ValueError:
                raise ControlError(502, f"worker {index} sent an answer that is not JSON") from None
        return ControlResponse.json(*merge_answers(decoded))

    async def _ask_all(
        self, request: ControlRequest, timeout: float
    ) -> list[tuple[int, tuple[int, bytes]]]:
        """Every serving worker's (status, body), by seat; 503 when none serves."""
        seats = list(self.seats())
        results = await asyncio.gather(
            *(self._ask(index, request, timeout) for index in seats), return_exceptions=True
        )
        answers = []
        for index, result in zip(seats, results, strict=True):
            if isinstance(result, _NotServing):
                log.debug("control: worker %d is not serving; left out", index)
            elif isinstance(result, asyncio.TimeoutError):
                raise ControlError(504, f"worker {index} did not answer within {timeout:g}s")
            elif isinstance(result, BaseException):
                log.warning("control: worker %d: %s", index, result)
                raise ControlError(502, f"worker {index} failed to answer (see the log)")
            else:
                answers.append((index, result))
        if not answers:
            raise ControlError(503, "no worker is serving right now")
        return answers

    async def _ask(self, index: int, request: ControlRequest, timeout: float) -> tuple[int, bytes]:
        try:
            reader, writer = await asyncio.open_unix_connection(
                channel_path(self.directory, index)
            )
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise _NotServing() from exc
        try:
            return await asyncio.wait_for(_exchange(reader, writer, request), timeout)
        finally:
            writer.close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: ControlRequest
) -> tuple[int, bytes]:
    """Send ``request`` as a program would (JSON, Host localhost) and read the answer."""
    conn = h11.Connection(h11.CLIENT)
    headers = [
        (b"Host", b"localhost"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"%d" % len(request.body)),
        (b"Connection", b"close"),
    ]
    head = h11.Request(method=request.method, target=request.path, headers=headers)
    writer.write(
        (conn.send(head) or b"")
        + (conn.send(h11.Data(data=request.body)) or b"")
        + (conn.send(h11.EndOfMessage()) or b"")
    )
    await writer.drain()
    message = await read_message(conn, reader, MAX_ANSWER_BYTES)
    if message is None or not isinstance(message[0], h11.Response):
        raise h11.RemoteProtocolError("closed without an answer")
    return message[0].status_code, message[1]
