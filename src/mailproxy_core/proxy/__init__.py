"""The reference proxy: an asyncio server that drives the sans-I/O core.

This subpackage is the only part of :mod:`mailproxy_core` that opens
sockets, reads files and clocks, and logs. The ``mailproxy`` command in
:mod:`mailproxy_core.proxy.cli` starts it.
"""
