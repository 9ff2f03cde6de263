"""Is a server reachable? Decided in seconds, before a library call that would wait on the network.

`wandb.init` (W&B logging) and `datasets.load_dataset` (Hub data) both wait long on a host that does
not answer; a TCP connect with a short timeout to the host they would reach first (the server, or
the proxy that would carry the request) tells us beforehand.
"""
from __future__ import annotations

import socket
import threading
import urllib.request
from urllib.parse import urlsplit


def probe_target(base_url: str) -> tuple[str, int]:
    """(host, port) a request to `base_url` first connects to: the proxy when one applies."""
    url = urlsplit(base_url)
    host = url.hostname or ""
    if not urllib.request.proxy_bypass(host):
        proxies = urllib.request.getproxies()
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if proxy:
            url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            host = url.hostname or ""
    return host, url.port or (443 if url.scheme == "https" else 80)


def probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within `timeout` seconds, else why not. The name
    lookup is inside the bound too (a thread: getaddrinfo itself takes no timeout)."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    worker = threading.Thread(target=connect, daemon=True, name=f"probe-{host}")
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def unreachable(base_url: str, timeout: float) -> str | None:
    """None when the server of `base_url` (or its proxy) accepts a connection within `timeout` s, else
    `host:port` and why not."""
    host, port = probe_target(base_url)
    failure = probe(host, port, timeout)
    return None if failure is None else f"{host}:{port} is unreachable ({failure})"
