"""A small threaded HTTP/1.1 server with keep-alive for the simulator's WSGI app.

Why not a stock server: the simulator must be able to drop a connection without an answer
(DropConnection) and must keep connections alive so that the client's pooling is exercised
(Werkzeug's development server closes every connection). Each response is written in one
send with TCP_NODELAY, which avoids a ~40 ms Nagle/delayed-ACK stall on keep-alive.
"""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from .engine import DropConnection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # the status line, headers and body leave in one send
    disable_nagle_algorithm = True
    timeout = 30  # seconds an idle keep-alive connection is kept

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._run_wsgi
        raise AttributeError(name)

    def log_message(self, format, *args):  # noqa: A002 - the recorded requests are the log
        pass

    def setup(self) -> None:
        super().setup()
        # A new connection: its handshake takes the engine's connect_latency (in this
        # connection's own thread, as a network would) before the first request is read.
        engine = getattr(self.server.app, "engine", None)
        if engine is not None and engine.connect_latency > 0:
            engine.stopping.wait(engine.connect_latency)

    def parse_request(self) -> bool:
        self.received = time.perf_counter()  # the request line is in: the call has arrived
        return super().parse_request()

    def _run_wsgi(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "simulator.server": self.server,
            "simulator.received": self.received,
        }
        if "Content-Type" in self.headers:
            environ["CONTENT_TYPE"] = self.headers["Content-Type"]
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value
        started: list = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        try:
            chunks = self.server.app(environ, start_response)
            try:
                payload = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
        except DropConnection:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class SimulatorServer(ThreadingHTTPServer):
    """Serves a WSGI app on host:port (port 0 picks a free one) in a background thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.app = app
        self.connections_opened = 0  # TCP connections accepted: shows whether clients pool
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def process_request(self, request, client_address):
        with self._count_lock:
            self.connections_opened += 1
        super().process_request(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="engage-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        engine = getattr(self.app, "engine", None)
        if engine is not None:
            engine.stopping.set()  # wake requests that sleep in latency or hang faults
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
