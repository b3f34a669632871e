"""Run the app on uvicorn: in the foreground (the command), or in a thread (tests, notebooks).

The socket is bound here, before uvicorn starts, so a port in use is one sentence, port 0
picks a free port whose number is then known, and a test's server is ready to answer the
moment `start` returns. `BackgroundServer` stops by itself when its `with` block ends.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from typing import Any

from unetkit.errors import UnetkitError

CONNECTIONS_OVER_QUEUE = 32  # connections uvicorn takes beyond the model queue before it answers 503


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); one sentence when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UnetkitError(f"--host {host}: not an address of this machine; use 127.0.0.1 (this machine only) "
                           "or 0.0.0.0 (every network)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UnetkitError(f"--port {port} is in use on {host}; stop what holds it or pick another with "
                               "--port N") from None
        if error.errno == errno.EACCES:
            raise UnetkitError(f"--port {port} needs more rights than this user has; pick one above 1023") from None
        raise UnetkitError(f"--host {host} --port {port} cannot be served ({error.strerror}); check the address") \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = host if ":" not in host else f"[{host}]"
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"http://{shown}:{port}/"


def _config(app: Any, capacity: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"), server_header=False,
                          limit_concurrency=capacity + CONNECTIONS_OVER_QUEUE, timeout_keep_alive=5,
                          lifespan="off")


def serve_forever(app: Any, sock: socket.socket, capacity: int, log_level: str = "info") -> None:
    """Serve until Ctrl+C (uvicorn handles the signal and finishes the requests in flight)."""
    import uvicorn

    uvicorn.Server(_config(app, capacity, log_level)).run(sockets=[sock])


class BackgroundServer:
    """The app served from a thread on `host` (default loopback) and `port` (default: a free one).

        with BackgroundServer(app) as server:
            requests.get(server.url + "health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, capacity: int = 9,
                 log_level: str = "warning") -> None:
        import uvicorn

        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(_config(app, capacity, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="unetkit-serve-http", daemon=True)

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise UnetkitError(f"the server at {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["BackgroundServer", "bind", "is_loopback", "serve_forever", "url_of"]
