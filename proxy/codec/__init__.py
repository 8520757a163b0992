"""Sans-IO codec for the PostgreSQL frontend/backend protocol, versions 3.0 and 3.2.

``framing`` splits a byte stream into frames (``FrameReader``) and startup
packets (``StartupReader``) without doing any I/O; ``messages`` turns payloads
into frozen dataclasses and back; every malformed input from the peer raises
``errors.ProtocolViolation`` (SQLSTATE 08P01).

We evaluated pygwire 0.2.0 and did not adopt it. It lacks CopyBothResponse
and a decoder for the client's GSSResponse ('p'); its ``GSSResponse`` is the
one-byte reply to GSSENCRequest. It accepts cancel keys of any length, while
the protocol allows 4 to 256 bytes. On truncated or garbage payloads it raises
struct.error, IndexError or ValueError, and it returns a DataRow whose value
runs past the end of the message. Its startup packet limit is 1 GB, not
PostgreSQL's 10,000 bytes, and its messages are mutable, with list and dict
fields. Speed did not decide it: it decodes a ten-column DataRow in about the
same time as this codec.
"""
