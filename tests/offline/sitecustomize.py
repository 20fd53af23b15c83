"""Offline guard for the test suite: any attempt to reach a non-loopback address fails loudly.

``conftest.py`` installs it in the pytest process and puts this folder on ``PYTHONPATH``, so that
Python imports it as ``sitecustomize`` at start-up in every child process too -- notebook kernels
started by nbval included. Loopback (and Unix sockets) stay open: kernels talk to Jupyter over them.

A blocked attempt raises :class:`NetworkBlocked` (deliberately *not* an ``OSError``, so that no
library's retry or fallback logic can swallow it) and is appended to the file named by
``BNCOURSE_NETWORK_LOG``; the test run fails any test during which that file grew.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import traceback

LOG_ENV = "BNCOURSE_NETWORK_LOG"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to reach the network."""


def _is_loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _blocked(what: str, target) -> None:
    message = f"bncourse offline guard: blocked {what} to {target!r}; the course must run without the network"
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, "a") as fh:
                fh.write(f"[pid {os.getpid()}] {message}\n{''.join(traceback.format_stack(limit=8))}\n")
        except OSError:
            pass
    print(message, file=sys.stderr)
    raise NetworkBlocked(message)


def _check_address(sock, address, what: str) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not _is_loopback(address[0]):
            _blocked(what, address)


def install() -> None:
    """Patch the socket module (idempotent)."""
    if getattr(socket.socket, "_bncourse_guarded", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check_address(self, address, "connect")
        return original_connect(self, address)

    def connect_ex(self, address):
        _check_address(self, address, "connect")
        return original_connect_ex(self, address)

    def sendto(self, data, *args):
        _check_address(self, args[-1], "sendto")
        return original_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            _blocked("name lookup", host)
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    socket.socket._bncourse_guarded = True


if os.environ.get(LOG_ENV):
    install()
