"""Fuzzing the codec: every input is either decoded or rejected with ProtocolViolation.

As in h11's fuzz harness, one invariant: whatever the peer sends, and however
it is split, the codec never fails with any other exception.  Whatever does
decode must encode back to exactly the bytes that came in, so no two wire
forms share a meaning (a proxy must not be told one thing while the server
hears another).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgshroud.proxy.codec import messages as m
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.framing import NEED_DATA, FrameReader, StartupReader, frame
from tests.unit.test_codec import BACKEND, FRONTEND, P_FAMILY, STARTUP, typed_message

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Decode = Callable[[bytes], object]
WireOf = Callable[[object, bytes], bytes]


def _packet(body: bytes) -> bytes:
    return (len(body) + 4).to_bytes(4, "big") + body


TYPED_CLASSES = [*FRONTEND, *P_FAMILY, *BACKEND, m.Authentication]
DECODERS: list[tuple[str, Decode, WireOf]] = [
    *((cls.__name__, cls.decode, lambda msg, p, t=cls.TYPE: frame(t, p)) for cls in TYPED_CLASSES),
    *((cls.__name__, cls.decode, lambda msg, p: _packet(p)) for cls in STARTUP),
    ("decode_authentication", m.decode_authentication, lambda msg, p: frame(b"R", p)),
    ("decode_startup_packet", m.decode_startup_packet, lambda msg, p: _packet(p)),
]


def check(decode: Decode, wire_of: WireOf, payload: bytes) -> None:
    try:
        msg = decode(payload)
    except ProtocolViolation:
        return
    assert msg.encode() == wire_of(msg, payload)  # type: ignore[attr-defined]


# Mostly short payloads that look like messages: counts, lengths, codes and
# NULs are where the decoders branch.
_ATOMS = [b"\0", b"\0\0", b"\xff\xff", b"\xff\xff\xff\xff", b"\0\0\0\x01", b"\0\x01", b"S", b"a"]
_atoms = st.sampled_from(_ATOMS)
payloads = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(_atoms, st.binary(max_size=4)), max_size=12).map(b"".join),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decoder=st.sampled_from(DECODERS), payload=payloads)
def test_garbage_decodes_or_violates(decoder: tuple[str, Decode, WireOf], payload: bytes) -> None:
    _, decode, wire_of = decoder
    check(decode, wire_of, payload)


# One or more valid messages of every class, to mutate.
EXAMPLES: list[object] = [
    m.Query("SELECT 1"),
    m.Parse("s", "SELECT $1, $2", (23, 25)),
    m.Bind("p", "s", (0, 1), (b"abc", None), (1,)),
    m.Describe(b"S", "stmt"),
    m.Execute("portal", 10),
    m.Sync(),
    m.Flush(),
    m.Close(b"P", "portal"),
    m.CopyData(b"1\t2\n"),
    m.CopyDone(),
    m.CopyFail("stop"),
    m.FunctionCall(1598, (1,), (b"\0\0\0\1", None), 1),
    m.Terminate(),
    m.PasswordMessage(b"md5abcdef"),
    m.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=x"),
    m.SASLInitialResponse("SCRAM-SHA-256", None),
    m.SASLResponse(b"c=biws"),
    m.GSSResponse(b"\x60\x82"),
    m.AuthenticationOk(),
    m.AuthenticationKerberosV5(),
    m.AuthenticationCleartextPassword(),
    m.AuthenticationMD5Password(b"salt"),
    m.AuthenticationGSS(),
    m.AuthenticationGSSContinue(b"tok"),
    m.AuthenticationSSPI(),
    m.AuthenticationSASL(("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS")),
    m.AuthenticationSASLContinue(b"r=x,s=y,i=4096"),
    m.AuthenticationSASLFinal(b"v=abc"),
    m.BackendKeyData(7, b"k" * 32),
    m.BindComplete(),
    m.CloseComplete(),
    m.CommandComplete("INSERT 0 1"),
    m.CopyInResponse(0, (0, 0)),
    m.CopyOutResponse(1, (1, 1, 1)),
    m.CopyBothResponse(0, ()),
    m.DataRow((b"1", None, b"three")),
    m.EmptyQueryResponse(),
    m.ErrorResponse.build("ERROR", "42501", "denied", detail="d", hint="h"),
    m.NoticeResponse.build("NOTICE", "00000", "hello"),
    m.FunctionCallResponse(b"\0\0\0\1"),
    m.FunctionCallResponse(None),
    m.NegotiateProtocolVersion(0, ("_pq_.a", "_pq_.b")),
    m.NoData(),
    m.NotificationResponse(7, "chan", "hello"),
    m.ParameterDescription((23, 25)),
    m.ParameterStatus("TimeZone", "UTC"),
    m.ParseComplete(),
    m.PortalSuspended(),
    m.ReadyForQuery(b"T"),
    m.RowDescription(
        (m.FieldDescription("a", 1, 2, 3, 4, 5, 0), m.FieldDescription("b", 0, 0, 25, -1, -1, 0))
    ),
    m.StartupMessage(3, 2, (("user", "u"), ("_pq_.x", "1"))),
    m.SSLRequest(),
    m.GSSENCRequest(),
    m.CancelRequest(7, b"k" * 32),
]


def payload_of(msg: object) -> bytes:
    wire = msg.encode()  # type: ignore[attr-defined]
    return wire[4:] if isinstance(msg, m.StartupPacket) else wire[5:]


def test_examples_cover_every_class() -> None:
    every_class = set(FRONTEND) | set(P_FAMILY) | set(BACKEND) | set(STARTUP)
    assert {type(x) for x in EXAMPLES} == every_class


_STARTUP_DECODERS = {cls.__name__ for cls in STARTUP} | {"decode_startup_packet"}


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(buf) + 1)
        op = rng.randrange(4)
        if op == 0:
            del buf[at:]
        elif op == 1 and at < len(buf):
            buf[at] = rng.choice([0, 0xFF, 1, buf[at] ^ 0x80, rng.randrange(256)])
        elif op == 2:
            if rng.random() < 0.7:
                buf[at:at] = rng.choice(_ATOMS)
            else:
                buf[at:at] = rng.randbytes(rng.randrange(1, 5))
        else:
            del buf[at : at + rng.randrange(1, 4)]
    return bytes(buf)


@pytest.mark.parametrize("name,decode,wire_of", DECODERS, ids=[d[0] for d in DECODERS])
def test_seeded_mutations(name: str, decode: Decode, wire_of: WireOf) -> None:
    # Far more inputs than Hypothesis can afford per decoder, reproducibly:
    # mutations of valid messages, half of them of the decoder's own class.
    startup = name in _STARTUP_DECODERS
    pool = [payload_of(x) for x in EXAMPLES if isinstance(x, m.StartupPacket) == startup]
    own = [payload_of(x) for x in EXAMPLES if type(x).__name__ == name] or pool
    rng = random.Random(name)
    for _ in range(1500):
        check(decode, wire_of, mutate(rng, rng.choice(own if rng.random() < 0.5 else pool)))


@FUZZ
@given(type_byte=st.binary(min_size=1, max_size=1), payload=payloads)
def test_dispatchers_on_garbage(type_byte: bytes, payload: bytes) -> None:
    check(lambda p: m.decode_frontend(type_byte, p), lambda msg, p: frame(type_byte, p), payload)
    check(lambda p: m.decode_backend(type_byte, p), lambda msg, p: frame(type_byte, p), payload)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=typed_message, data=st.data())
def test_mutated_messages_decode_or_violate(msg: object, data: st.DataObject) -> None:
    payload = bytearray(msg.encode()[5:])  # type: ignore[attr-defined]
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        at = data.draw(st.integers(0, len(payload)))
        if op == "cut":
            del payload[at:]
        elif op == "flip" and at < len(payload):
            payload[at] = data.draw(st.sampled_from([0, 0xFF, 0x01, payload[at] ^ 0x80]))
        elif op == "insert":
            payload[at:at] = data.draw(st.sampled_from([b"\0", b"\xff\xff\xff\xff", b"\0\x05"]))
        elif op == "delete":
            del payload[at : at + 1]
    cls = type(msg)
    check(cls.decode, lambda decoded, p: frame(cls.TYPE, p), bytes(payload))


SAMPLES = [
    m.Bind("p", "s", (0, 1), (b"abc", None), (1,)),
    m.Parse("s", "SELECT $1, $2", (23, 25)),
    m.FunctionCall(1598, (1,), (b"\0\0\0\1", None), 1),
    m.DataRow((b"1", None, b"three")),
    m.RowDescription(
        (m.FieldDescription("a", 1, 2, 3, 4, 5, 0), m.FieldDescription("b", 0, 0, 25, -1, -1, 0))
    ),
    m.ErrorResponse.build("ERROR", "42501", "denied", detail="d", hint="h"),
    m.NegotiateProtocolVersion(0, ("_pq_.a", "_pq_.b")),
    m.NotificationResponse(7, "chan", "hello"),
    m.CopyOutResponse(1, (1, 1, 1)),
    m.ParameterDescription((23, 25)),
    m.AuthenticationSASL(("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS")),
    m.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=x"),
    m.Execute("portal", 10),
    m.Describe(b"S", "stmt"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_every_truncation_is_rejected(msg: object) -> None:
    # These messages end in a terminator or a counted field, so any proper
    # prefix of the payload is malformed.
    payload = msg.encode()[5:]  # type: ignore[attr-defined]
    for cut in range(len(payload)):
        with pytest.raises(ProtocolViolation):
            type(msg).decode(payload[:cut])


def join_wire(msgs: list[object]) -> bytes:
    return b"".join(x.encode() for x in msgs)  # type: ignore[attr-defined]


def frames_of(data: bytes, chunk: int) -> tuple[list[tuple[bytes, bytes]], bool]:
    reader = FrameReader(max_length=1000)
    out: list[tuple[bytes, bytes]] = []
    try:
        for i in range(0, len(data), chunk):
            reader.receive_data(data[i : i + chunk])
            while (item := reader.next_frame()) is not NEED_DATA:
                out.append(item)
    except ProtocolViolation:
        return out, True
    return out, False


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=200), st.lists(typed_message, max_size=6).map(join_wire)),
    junk=st.binary(max_size=12),
)
def test_frame_reader_on_anything(data: bytes, junk: bytes) -> None:
    stream = data + junk
    whole = frames_of(stream, max(1, len(stream)))
    assert frames_of(stream, 1) == whole
    assert frames_of(stream, 7) == whole
    frames, violated = whole
    consumed = b"".join(frame(t, p) for t, p in frames)
    assert stream.startswith(consumed)
    if not violated:
        # What is left is a strict prefix of one frame: under 5 bytes, or a
        # valid header whose body has not fully arrived.
        rest = stream[len(consumed) :]
        assert len(rest) < 5 or int.from_bytes(rest[1:5], "big") + 1 > len(rest)


def packets_of(data: bytes, chunk: int) -> tuple[list[object], bool]:
    reader = StartupReader()
    out: list[object] = []
    try:
        for i in range(0, len(data), chunk):
            reader.receive_data(data[i : i + chunk])
            while (body := reader.next_packet()) is not NEED_DATA:
                out.append(m.decode_startup_packet(body))  # type: ignore[arg-type]
    except ProtocolViolation:
        return out, True
    return out, False


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=120),
        st.lists(st.one_of(*STARTUP.values()), max_size=4).map(join_wire),
    ),
    junk=st.binary(max_size=12),
)
def test_startup_reader_on_anything(data: bytes, junk: bytes) -> None:
    stream = data + junk
    whole = packets_of(stream, max(1, len(stream)))
    assert packets_of(stream, 1) == whole
    packets, _ = whole
    assert stream.startswith(b"".join(p.encode() for p in packets))  # type: ignore[attr-defined]
