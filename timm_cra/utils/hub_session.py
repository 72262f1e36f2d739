"""A bound on the whole duration of each request huggingface_hub's shared HTTP client (``get_session()``) makes.

The client's time-outs (httpx / httpx2) are per socket read: a Hub that answers ``200`` and then sends one byte a
second, or one header line a second, never trips them, and the request waits forever. :func:`bounded_hub_requests`
gives every request started in its block a deadline: headers and body complete within ``seconds``, or its socket is
shut down and the client raises its own ``ReadTimeout`` (a time-out to :func:`~timm_cra.utils.errors.transport_failure`
and to huggingface_hub's retries). The HTTP library is reached through the client object, never imported by name:
huggingface_hub uses httpx or httpx2 depending on its version.
"""
import contextlib
import functools
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator, Optional

__all__ = ['bounded_hub_requests', 'bounded_client']


@contextlib.contextmanager
def bounded_hub_requests(seconds: float, whole_block: bool = False) -> Iterator[None]:
    """While the block runs, every request through huggingface_hub's shared client waits at most ``seconds`` for each
    read (the client's ``timeout``) and takes at most ``seconds`` in all, headers and body (huggingface_hub's fetch of
    its agent registry, ``/api/agent-harnesses``, made with the first request's headers, included). ``whole_block``:
    every request also ends by ``seconds`` after the block began (a download resumes after each time-out, so a bound per
    request alone lets a trickle go on). The client's own transport and time-out are restored afterwards."""
    from huggingface_hub import get_session
    session = get_session()
    before = session.timeout, session._transport
    deadline = _DeadlineTransport(_library(session), seconds, time.monotonic() + seconds if whole_block else None)
    # ``_transport``: what httpx and httpx2 clients send every request through that no proxy mount takes (a proxy
    # from the environment keeps its own transport, with the per-read time-out only).
    session.timeout, session._transport = seconds, deadline
    try:
        yield
    finally:
        session.timeout, session._transport = before
        deadline.close()


@contextlib.contextmanager
def bounded_client(seconds: float) -> Iterator[Any]:
    """A client of the class of huggingface_hub's shared client (httpx or httpx2) whose every request completes,
    headers and body, within ``seconds``. The shared client is not touched: :func:`bounded_hub_requests` swaps its
    transport for the whole process, so a probe made under it while other threads loaded weights cut their
    downloads (*broke off*) and could leave its short deadline installed for a later download."""
    from huggingface_hub import get_session
    session = get_session()
    deadline = _DeadlineTransport(_library(session), seconds)
    client = type(session)(transport=deadline, timeout=seconds)
    try:
        yield client
    finally:
        client.close()


def _library(session) -> SimpleNamespace:
    """The HTTP library's classes, reached through the client's own code, so httpx and httpx2 alike, whether or not
    the package's name imports: the module of ``Client.send`` imports its transport class, whose module imports the
    limits, byte stream and time-out classes."""
    library = type(session).send.__globals__['HTTPTransport'].handle_request.__globals__
    return SimpleNamespace(**{name: library[name] for name in ('HTTPTransport', 'Limits', 'SyncByteStream',
                                                               'ReadTimeout')})


class _DeadlineTransport:
    """An HTTP transport that aborts each request still incomplete ``seconds`` after it started.

    Its own connection pool keeps no idle connection, so each request opens its own, whose socket the pool's
    ``trace`` hook reports (``connection.connect_tcp.complete``): at the deadline that socket is shut down, which
    wakes a read blocked on it at once, and the failure is raised as the library's ``ReadTimeout``."""

    def __init__(self, http, seconds: float, end: Optional[float] = None):
        self._http, self._seconds, self._end = http, seconds, end
        self._pool = http.HTTPTransport(limits=http.Limits(max_keepalive_connections=0))

    def handle_request(self, request):
        streams, expired = [], threading.Event()
        traced = request.extensions.get('trace')

        def trace(event, info):
            if event.endswith(('connect_tcp.complete', 'connect_unix_socket.complete')) and info.get('return_value'):
                streams.append(info['return_value'])
                if expired.is_set():  # connected just as the deadline passed
                    _shut(streams)
            if traced is not None:
                traced(event, info)

        def expire():
            expired.set()
            _shut(streams)

        seconds = self._seconds if self._end is None else min(self._seconds, self._end - time.monotonic())
        if seconds <= 0:
            raise self._timed_out(request)
        request.extensions = {**request.extensions, 'trace': trace}
        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            response = self._pool.handle_request(request)
        except Exception as e:
            timer.cancel()
            if expired.is_set():
                raise self._timed_out(request) from e
            raise
        body = _deadline_stream_class(self._http.SyncByteStream)
        response.stream = body(response.stream, timer, expired, lambda: self._timed_out(request))
        return response

    def _timed_out(self, request):
        # The library's own words for a read time-out: the deadline and the per-read time-out of a silent server
        # race, and the one line reads the same whichever ends the request.
        return self._http.ReadTimeout('timed out', request=request)

    def close(self):
        self._pool.close()


def _shut(streams) -> None:
    for stream in streams:
        with contextlib.suppress(OSError, AttributeError):
            stream.get_extra_info('socket').shutdown(socket.SHUT_RDWR)


@functools.lru_cache(maxsize=None)
def _deadline_stream_class(base: type):
    """A response body class deriving from the library's ``SyncByteStream`` (``base``), as its ``Response`` wants."""

    class DeadlineStream(base):
        """A body that raises the transport's time-out once the deadline has shut its socket down; closing it (the
        body read, or the response dropped) ends the deadline."""

        def __init__(self, stream, timer: threading.Timer, expired: threading.Event, timed_out):
            self._stream, self._timer, self._expired, self._timed_out = stream, timer, expired, timed_out

        def __iter__(self):
            try:
                yield from self._stream
            except Exception as e:
                if self._expired.is_set():
                    raise self._timed_out() from e
                raise

        def close(self):
            self._timer.cancel()
            self._stream.close()

    return DeadlineStream
