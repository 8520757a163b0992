"""Sans-IO codec for the PostgreSQL frontend/backend protocol, versions 3.0 and 3.2.

``framing`` splits a byte stream into frames (``FrameReader``) and startup
packets (``StartupReader``) without doing any I/O; ``messages`` turns payloads
into frozen dataclasses and back; every malformed input from the peer raises
``errors.ProtocolViolation`` (SQLSTATE 08P01).

We evaluated pygwire 0.2.0 and did not adopt it: it has no CopyBothResponse
and no decoder for the client's GSSResponse ('p'); its ``GSSResponse`` is the
one-byte reply to GSSENCRequest. It takes cancel keys of any length in both
BackendKeyData and CancelRequest, although the protocol allows 4 to 256 bytes.
Truncated or garbage payloads make it raise struct.error, IndexError or
ValueError instead of its own errors, and it returns a DataRow whose value
runs past the end of the message.
Its startup packet limit is 1 GB rather than PostgreSQL's 10,000 bytes, and
its messages are mutable dataclasses with list and dict fields. Its speed
was comparable (DataRow decode within 20% of ours).
"""
