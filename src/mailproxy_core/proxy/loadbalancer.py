"""The PROXY protocol header from trusted load balancers, read before TLS.

A listener with ``proxy_protocol`` lists the addresses of its load
balancers. A connection from one of them must start with a PROXY protocol
header (version 1 or 2), which :func:`read_proxy_header` reads without
taking a byte of the TLS handshake that follows. A connection from any
other address carries no header and is served as usual, so a header sent
by such a peer fails its TLS handshake.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

from ..proxyheader import ProxyHeader, ProxyHeaderParser
from .stream import PeerStream

#: An address or network of load balancers, such as ``10.0.0.0/8``.
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """Parse an IP address, which becomes a one-address network, or a network.

    :raises ValueError: when ``text`` is neither, or when it is a network
        with host bits set, such as ``10.0.0.1/8``.
    """
    return ipaddress.ip_network(text.strip(), strict=True)


def is_trusted(host: str | None, networks: Sequence[Network]) -> bool:
    """Return whether ``host``, a peer's IP address, is in ``networks``.

    An IPv4 peer of a dual-stack socket appears as an IPv4-mapped IPv6
    address (``::ffff:10.0.0.5``) and is compared as the IPv4 address.
    """
    if host is None or not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


async def read_proxy_header(
    stream: PeerStream, *, timeout: float
) -> ProxyHeader | None:
    """Read one PROXY protocol header from ``stream``, and not a byte more.

    Each read takes at most :meth:`ProxyHeaderParser.max_read` bytes, so
    the next byte in the socket is the first one after the header. Reading
    is paused when this returns.

    :param timeout: seconds for the whole header.
    :returns: the header, or ``None`` when the connection ended before it
        was complete.
    :raises ~mailproxy_core.proxyheader.ProxyHeaderError: when the bytes
        are not a valid header.
    :raises TimeoutError: when the header is not complete in time.
    """
    parser = ProxyHeaderParser()
    async with asyncio.timeout(timeout):
        while True:
            data = await stream.read_at_most(parser.max_read())
            if not data:
                return None
            header = parser.feed(data)
            if header is not None:
                return header
