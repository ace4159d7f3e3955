"""Sans-I/O state machines for authenticating IMAP, POP3 and SMTP proxies.

A client logs in with combined credentials such as ``vpnuser:mailuser@server``
and ``vpnpass:mailpass``. A session checks the VPN part, logs in to the
upstream mail server with the mail part, then relays the connection. The
sessions never touch sockets or clocks: a driver, such as the reference
asyncio proxy in :mod:`mailproxy_core.proxy`, feeds them bytes and acts on the
events that they return.
"""

__version__ = "0.1.0"
