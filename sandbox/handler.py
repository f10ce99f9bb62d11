"""HTTP plumbing: a keep-alive, threaded stdlib server that hands each request to the Sandbox."""

from __future__ import annotations

import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sandbox.records import Response

if TYPE_CHECKING:
    from sandbox.server import Sandbox


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that hangs up mid-"timeout" must not keep the process alive
    request_queue_size = 128  # benchmarks open many keep-alive connections at once

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        super().__init__(address, SandboxHandler)
        self.sandbox = sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the game: stay quiet about broken connections.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every answer carries Content-Length
    disable_nagle_algorithm = True  # headers and body are separate writes; Nagle would add ~40 ms stalls
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per request would dominate benchmark time

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(Response(400, b'{"error":"unreadable body"}'))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = self.server.sandbox.handle(self.command, self.path, headers, body)
        except Exception:  # noqa: BLE001 - a sandbox bug must show up as a 500, not a dropped connection
            traceback.print_exc()
            response = Response(500, b'{"error":{"code":"500","message":"Sandbox error","exception":null}}')
        self._send(response)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _dispatch

    def __getattr__(self, name: str) -> Any:
        # Any other method (CONNECT, PROPFIND, ...) also reaches the sandbox, which answers a JSON 405 or 404:
        # the stdlib would send an HTML 501 page.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        names = {name.lower() for name in response.headers}
        for name, value in response.headers.items():
            if name.lower() != "content-length":  # always computed here, whatever a scripted fault says
                self.send_header(name, value)
        body = b"" if response.status == 204 else response.body
        if response.status != 204:  # 204 carries neither a body nor Content-Length
            if body and "content-type" not in names:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":  # HEAD gets the headers a body would have, never the body
            self.wfile.write(body)
