"""Agents behind a relay: expose an app on a laptop through a public phantom (``phantom relay``
and ``phantom expose``). (Not to be confused with :mod:`phantom.relay`, which relays a backend's
answer to a client.)

An agent (``phantom expose``) holds one control connection to the relay, an HTTP/1.1 upgrade to
``phantom-relay/1`` that carries small control messages only. Each public connection gets its
own data connection, dialled by the agent (another upgrade, naming the connection) and spliced
to the public socket with :mod:`phantom.tunnel`: no payload byte is ever framed or parsed.

Modules: ``protocol`` (the handshakes and control messages, pure), ``registry`` (names, tokens
and reservations, pure), ``hub`` (the relay's agent-facing side), ``front`` (the relay's
public listener), ``agent`` (``phantom expose``).
"""
