"""Where webhooks may be delivered: public addresses only, unless the deployment allows private
ones (ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE, for a laptop or tests).

Integrators choose the URLs, so without this guard the dispatcher would POST into the cluster
(NATS monitoring, PostgreSQL, the cloud metadata address). Registration refuses IP literals and
``localhost``; the dispatcher checks every address a name resolves to at connect time and
connects to that very address, so a name that resolves elsewhere later (DNS rebinding) is
checked again and never reaches a private address.
"""

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses to try, in order (the default asks the system resolver)
Resolver = Callable[[str, int], Awaitable[list[str]]]
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, including the legacy forms (``2130706433``,
    ``0177.0.0.1``, ``127.1``) that resolvers still accept; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def is_public(address: IPAddress) -> bool:
    """False for private, loopback, link-local, shared (CGNAT), multicast, reserved,
    documentation and unspecified addresses, also when an IPv6 address embeds an IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved)


def refused_host(host: str) -> str | None:
    """Why a URL host is refused at registration, or None. Names other than localhost pass:
    they are checked when delivering, against what they resolve to then."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "localhost is not a public address"
    address = literal_address(name)
    if address is not None and not is_public(address):
        return f"{address} is not a public address"
    return None


class RefusedDestination(Exception):
    """The host resolves to an address deliveries may not go to."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"refused: {host} resolves to a non-public address")
        self.host = host
        self.address = address


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving names itself: it refuses a host when any of its
    addresses is not public, and otherwise connects to the address it checked. TLS still
    verifies the URL's host name (httpcore passes it to start_tls separately)."""

    def __init__(self, allow_private: bool, resolve: Resolver = system_resolve) -> None:
        self.allow_private = allow_private
        self.resolve = resolve  # tests map names to addresses here
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        if not self.allow_private:
            for address in addresses:
                parsed = literal_address(address.split("%", 1)[0])
                if parsed is None or not is_public(parsed):
                    raise RefusedDestination(host, address)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # try the host's next address
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a GuardedBackend. No environment proxies: the guard has to see
    the address it connects to."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx does not take a network backend, so the pool it built is replaced by an
        # identical one that connects through the guard.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
