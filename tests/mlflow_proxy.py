"""A reverse proxy on loopback that puts switchable faults between MLflow's client and a real
``mlflow server``, for the tests and ``benchmarks/faults.py``.

    with mlflow_server(root) as server, FaultyProxy(server.uri) as proxy:
        tracker = Tracker(proxy.url, "exp")          # talks to the server through the proxy
        proxy.set("5xx_after_commit", path="runs/create", times=1)
        ...                                           # the next runs/create is committed, then 500
        proxy.mode = "ok"                             # back to plain forwarding

Modes (``FaultyProxy.MODES``):

- ``ok``: forward the request and relay the answer;
- ``refuse``: close the connection at once, without an answer;
- ``5xx_after_commit``: forward the request (so the server commits it), then answer 500;
- ``408_after_commit``: the same with a 408, the answer of a gateway whose wait for the server
  ran out (MLflow's client, with its retries on, sends even a ``runs/create`` again after it);
- ``429``: answer 429 with ``Retry-After: 1``, without forwarding;
- ``hang``: accept the request and never answer (until the proxy stops).

A fault applies to the requests whose path contains ``path`` (every request when it is
empty), and to the next ``times`` of them (all of them when ``None``); when ``times`` are
used up the proxy is back to ``ok``. ``faulted`` counts the requests a fault was applied to.
Plain stdlib: one thread per connection, answers in HTTP/1.0 (one request per connection).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["ok", "refuse", "5xx_after_commit", "408_after_commit", "429", "hang"]

# Headers about one connection, not the message, or that the proxy writes itself: never copied.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "content-length", "host", "date", "server"})
_UPSTREAM_TIMEOUT_S = 120.0


class FaultyProxy:
    """A threaded HTTP reverse proxy on 127.0.0.1 in front of ``upstream_url``.

    Use it as a context manager: entering starts it on a free port (``url``), leaving stops
    it, releasing every request held by ``hang``.
    """

    MODES: tuple[str, ...] = ("ok", "refuse", "5xx_after_commit", "408_after_commit", "429", "hang")

    def __init__(self, upstream_url: str, mode: Mode = "ok", path: str = "",
                 times: int | None = None):
        parts = urllib.parse.urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream_url: want http://host:port, got {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port)
        self.url = ""
        self.faulted = 0
        self.authorizations: set[str] = set()
        """Every ``Authorization`` header the proxy was sent (empty string: none)."""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.set(mode, path, times)

    # -- the fault ---------------------------------------------------------------------------

    def set(self, mode: Mode, path: str = "", times: int | None = None) -> None:
        """Switch the fault: ``mode`` for the next ``times`` requests whose path has ``path``."""
        if mode not in self.MODES:
            raise ValueError(f"mode: one of {', '.join(self.MODES)}, got {mode!r}")
        with self._lock:
            self._mode, self._path, self._times = mode, path, times

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self.set(mode)

    def fault_for(self, path: str) -> str:
        """The mode that applies to this request (and counts it when it is a fault)."""
        with self._lock:
            if self._mode == "ok" or self._path not in path:
                return "ok"
            mode = self._mode
            self.faulted += 1
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._mode, self._path, self._times = "ok", "", None
            return mode

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FaultyProxy:
        self._stopped.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-proxy",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()  # first: a handler held by "hang" returns and closes its connection
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the proxy stops (what a ``hang`` handler does); True once stopped."""
        return self._stopped.wait(timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultyProxy

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (its timeout) while a handler wrote: expected under faults.
        log.debug("proxy: a connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One request: apply the proxy's fault, or forward it upstream."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        with proxy._lock:
            proxy.authorizations.add(self.headers.get("Authorization", ""))
        body = self._read_body()
        mode = proxy.fault_for(self.path)
        if mode == "refuse":
            self.close_connection = True
            return  # nothing is written: the client sees its connection closed
        if mode == "hang":
            proxy.wait_stopped()
            self.close_connection = True
            return
        if mode == "429":
            self._answer(429, {"Retry-After": "1"},
                         {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "injected 429"})
            return
        try:
            status, headers, payload = self._forward(body)
        except OSError as err:  # the server is down or did not answer: a gateway's 502
            log.debug("proxy: upstream failed: %s", err)
            self._answer(502, {}, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": str(err)})
            return
        if mode == "5xx_after_commit":
            self._answer(500, {}, {"error_code": "INTERNAL_ERROR", "message": "injected 500"})
            return
        if mode == "408_after_commit":
            self._answer(408, {}, {"error_code": "DEADLINE_EXCEEDED", "message": "injected 408"})
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, up to the empty line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.server.proxy.upstream
        conn = http.client.HTTPConnection(host, port, timeout=_UPSTREAM_TIMEOUT_S)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = f"{host}:{port}"
            conn.request(self.command, self.path, body=body or None, headers=headers)
            reply = conn.getresponse()
            payload = reply.read()
            kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP_BY_HOP]
            return reply.status, kept, payload
        finally:
            conn.close()

    def _answer(self, status: int, headers: dict[str, str], doc: dict[str, str]) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        log.debug("proxy %s: " + format, self.address_string(), *args)
