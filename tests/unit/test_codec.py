"""Codec tests on bytes alone: golden vectors, round trips, framing, startup."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgshroud.proxy.codec import messages as m
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.framing import (
    MAX_STARTUP_PACKET_LENGTH,
    NEED_DATA,
    FrameReader,
    StartupReader,
    frame,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------

# Strings as they arrive: any bytes but NUL, decoded the codec's way, plus
# ordinary text. Both must survive encode/decode unchanged.
_raw_text = st.binary(max_size=24).map(
    lambda b: b.replace(b"\0", b"").decode("utf-8", "surrogateescape")
)
_plain_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    max_size=24,
)
text = st.one_of(_plain_text, _raw_text)
name = text.filter(bool)
int16 = st.integers(-(2**15), 2**15 - 1)
uint32 = st.integers(0, 2**32 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
value = st.one_of(st.none(), st.binary(max_size=24))
values = st.lists(value, max_size=6).map(tuple)
formats = st.lists(int16, max_size=6).map(tuple)
oids = st.lists(uint32, max_size=6).map(tuple)
kind = st.sampled_from([b"S", b"P"])
secret = st.binary(min_size=4, max_size=256)
# Field codes are single bytes; odd ones must survive too.
field_code = st.one_of(
    st.sampled_from("SVCMDHPpqWstcdnFLR"),
    st.integers(1, 255).map(lambda i: bytes((i,)).decode("utf-8", "surrogateescape")),
)


@st.composite
def _with_formats(draw: st.DrawFn, make) -> object:  # type: ignore[no-untyped-def]
    # Bind and FunctionCall: zero, one, or one format code per value.
    vals = draw(values)
    fmts = draw(
        st.one_of(
            st.just(()),
            st.tuples(int16),
            st.lists(int16, min_size=len(vals), max_size=len(vals)).map(tuple),
        )
    )
    return make(draw, fmts, vals)


field_description = st.builds(m.FieldDescription, text, uint32, int16, uint32, int16, int32, int16)

FRONTEND = {
    m.Query: st.builds(m.Query, text),
    m.Parse: st.builds(m.Parse, text, text, oids),
    m.Bind: _with_formats(lambda d, f, v: m.Bind(d(text), d(text), f, v, d(formats))),
    m.Describe: st.builds(m.Describe, kind, text),
    m.Execute: st.builds(m.Execute, text, uint32),
    m.Sync: st.just(m.Sync()),
    m.Flush: st.just(m.Flush()),
    m.Close: st.builds(m.Close, kind, text),
    m.CopyData: st.builds(m.CopyData, st.binary(max_size=40)),
    m.CopyDone: st.just(m.CopyDone()),
    m.CopyFail: st.builds(m.CopyFail, text),
    m.FunctionCall: _with_formats(lambda d, f, v: m.FunctionCall(d(uint32), f, v, d(int16))),
    m.Terminate: st.just(m.Terminate()),
    m.PasswordMessage: st.builds(
        m.PasswordMessage, st.binary(max_size=40).map(lambda b: b.replace(b"\0", b""))
    ),
}

# The 'p' replies other than PasswordMessage: only their own decode() knows them.
P_FAMILY = {
    m.SASLInitialResponse: st.builds(m.SASLInitialResponse, text, value),
    m.SASLResponse: st.builds(m.SASLResponse, st.binary(max_size=40)),
    m.GSSResponse: st.builds(m.GSSResponse, st.binary(max_size=40)),
}

copy_response = lambda cls: st.builds(cls, st.integers(0, 255), formats)
fields = st.lists(st.tuples(field_code, text), max_size=6).map(tuple)

BACKEND = {
    m.AuthenticationOk: st.just(m.AuthenticationOk()),
    m.AuthenticationKerberosV5: st.just(m.AuthenticationKerberosV5()),
    m.AuthenticationCleartextPassword: st.just(m.AuthenticationCleartextPassword()),
    m.AuthenticationMD5Password: st.builds(
        m.AuthenticationMD5Password, st.binary(min_size=4, max_size=4)
    ),
    m.AuthenticationGSS: st.just(m.AuthenticationGSS()),
    m.AuthenticationGSSContinue: st.builds(m.AuthenticationGSSContinue, st.binary(max_size=40)),
    m.AuthenticationSSPI: st.just(m.AuthenticationSSPI()),
    m.AuthenticationSASL: st.builds(m.AuthenticationSASL, st.lists(name, max_size=3).map(tuple)),
    m.AuthenticationSASLContinue: st.builds(m.AuthenticationSASLContinue, st.binary(max_size=40)),
    m.AuthenticationSASLFinal: st.builds(m.AuthenticationSASLFinal, st.binary(max_size=40)),
    m.BackendKeyData: st.builds(m.BackendKeyData, uint32, secret),
    m.BindComplete: st.just(m.BindComplete()),
    m.CloseComplete: st.just(m.CloseComplete()),
    m.CommandComplete: st.builds(m.CommandComplete, text),
    m.CopyData: st.builds(m.CopyData, st.binary(max_size=40)),
    m.CopyDone: st.just(m.CopyDone()),
    m.CopyInResponse: copy_response(m.CopyInResponse),
    m.CopyOutResponse: copy_response(m.CopyOutResponse),
    m.CopyBothResponse: copy_response(m.CopyBothResponse),
    m.DataRow: st.builds(m.DataRow, values),
    m.EmptyQueryResponse: st.just(m.EmptyQueryResponse()),
    m.ErrorResponse: st.builds(m.ErrorResponse, fields),
    m.NoticeResponse: st.builds(m.NoticeResponse, fields),
    m.FunctionCallResponse: st.builds(m.FunctionCallResponse, value),
    m.NegotiateProtocolVersion: st.builds(
        m.NegotiateProtocolVersion, uint32, st.lists(text, max_size=4).map(tuple)
    ),
    m.NoData: st.just(m.NoData()),
    m.NotificationResponse: st.builds(m.NotificationResponse, uint32, text, text),
    m.ParameterDescription: st.builds(m.ParameterDescription, oids),
    m.ParameterStatus: st.builds(m.ParameterStatus, text, text),
    m.ParseComplete: st.just(m.ParseComplete()),
    m.PortalSuspended: st.just(m.PortalSuspended()),
    m.ReadyForQuery: st.builds(m.ReadyForQuery, st.sampled_from([b"I", b"T", b"E"])),
    m.RowDescription: st.builds(
        m.RowDescription, st.lists(field_description, max_size=4).map(tuple)
    ),
}

STARTUP = {
    m.StartupMessage: st.builds(
        m.StartupMessage,
        st.just(3),
        st.integers(0, 0xFFFF),
        st.lists(st.tuples(name, text), max_size=4).map(tuple),
    ),
    m.SSLRequest: st.just(m.SSLRequest()),
    m.GSSENCRequest: st.just(m.GSSENCRequest()),
    m.CancelRequest: st.builds(m.CancelRequest, uint32, secret),
}

frontend_message = st.one_of(*FRONTEND.values())
backend_message = st.one_of(*BACKEND.values())
typed_message = st.one_of(frontend_message, backend_message, *P_FAMILY.values())


def split(wire: bytes) -> tuple[bytes, bytes]:
    """Check a typed message's header and return (type byte, payload)."""
    (length,) = struct.unpack_from("!i", wire, 1)
    assert length == len(wire) - 1
    return wire[:1], wire[5:]


# --- round trips -------------------------------------------------------------


def test_every_message_class_has_a_strategy() -> None:
    covered = set(FRONTEND) | set(P_FAMILY) | set(BACKEND) | set(STARTUP)
    exported = {
        obj
        for n in m.__all__
        if isinstance(obj := getattr(m, n), type)
        and (hasattr(obj, "encode") and obj is not m.Authentication)
    }
    assert exported == covered


@pytest.mark.parametrize("cls", list(FRONTEND), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_frontend_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(FRONTEND[cls])
    type_byte, payload = split(msg.encode())
    assert type_byte == cls.TYPE
    assert cls.decode(payload) == msg
    assert m.decode_frontend(type_byte, payload) == msg


@pytest.mark.parametrize("cls", list(P_FAMILY), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_password_family_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(P_FAMILY[cls])
    type_byte, payload = split(msg.encode())
    assert type_byte == b"p"
    assert cls.decode(payload) == msg


@pytest.mark.parametrize("cls", list(BACKEND), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_backend_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(BACKEND[cls])
    type_byte, payload = split(msg.encode())
    assert type_byte == cls.TYPE
    assert cls.decode(payload) == msg
    assert m.decode_backend(type_byte, payload) == msg


@pytest.mark.parametrize("cls", list(STARTUP), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_startup_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(STARTUP[cls])
    wire = msg.encode()
    reader = StartupReader()
    reader.receive_data(wire)
    body = reader.next_packet()
    assert body == wire[4:]
    assert cls.decode(body) == msg
    assert m.decode_startup_packet(body) == msg
    assert reader.buffered() == 0


# --- golden vectors (protocol.sgml, "Message Formats") ---------------------

GOLDEN = [
    (m.SSLRequest(), "00000008 04d2162f"),
    (m.GSSENCRequest(), "00000008 04d21630"),
    (m.CancelRequest(1234, bytes.fromhex("01020304")), "00000010 04d2162e 000004d2 01020304"),
    (
        m.CancelRequest(42, bytes(range(32))),
        "0000002c 04d2162e 0000002a" + bytes(range(32)).hex(),
    ),
    (
        m.StartupMessage(3, 0, (("user", "alice"),)),
        "00000014 00030000" + b"user\0alice\0\0".hex(),
    ),
    (
        m.StartupMessage(3, 2, (("user", "a"), ("_pq_.x", "1"))),
        "00000019 00030002" + b"user\0a\0_pq_.x\x001\0\0".hex(),
    ),
    (m.Query("SELECT 1"), "51 0000000d" + b"SELECT 1\0".hex()),
    (m.Sync(), "53 00000004"),
    (m.Terminate(), "58 00000004"),
    (m.Execute("", 0), "45 00000009 00 00000000"),
    (m.Describe(b"P", ""), "44 00000006 50 00"),
    (m.Parse("", "SELECT $1", (23,)), "50 00000015 00" + b"SELECT $1\0".hex() + "0001 00000017"),
    (
        m.Bind("", "", (1,), (b"\x00\x00\x00\x2a", None), ()),
        "42 0000001a 00 00 0001 0001 0002 00000004 0000002a ffffffff 0000",
    ),
    (m.PasswordMessage(b"pw"), "70 00000007 707700"),
    (
        m.SASLInitialResponse("SCRAM-SHA-256", None),
        "70 00000016" + b"SCRAM-SHA-256\0".hex() + "ffffffff",
    ),
    (m.AuthenticationOk(), "52 00000008 00000000"),
    (m.AuthenticationCleartextPassword(), "52 00000008 00000003"),
    (m.AuthenticationMD5Password(b"salt"), "52 0000000c 00000005" + b"salt".hex()),
    (m.AuthenticationSASL(("SCRAM-SHA-256",)), "52 00000017 0000000a" + b"SCRAM-SHA-256\0\0".hex()),
    (m.BackendKeyData(7, b"\x00\x00\x00\x09"), "4b 0000000c 00000007 00000009"),
    (m.ReadyForQuery(b"I"), "5a 00000005 49"),
    (m.CommandComplete("SELECT 1"), "43 0000000d" + b"SELECT 1\0".hex()),
    (m.DataRow((b"1", None)), "44 0000000f 0002 00000001 31 ffffffff"),
    (
        m.RowDescription((m.FieldDescription("x", 0, 0, 23, 4, -1, 0),)),
        "54 0000001a 0001 7800 00000000 0000 00000017 0004 ffffffff 0000",
    ),
    (m.ParameterStatus("a", "b"), "53 00000008 6100 6200"),
    (
        m.NegotiateProtocolVersion(0, ("_pq_.x",)),
        "76 00000013 00000000 00000001" + b"_pq_.x\0".hex(),
    ),
    (
        m.ErrorResponse.build("ERROR", "42P01", "no"),
        "45 0000001e" + b"SERROR\0VERROR\0C42P01\0Mno\0\0".hex(),
    ),
]


@pytest.mark.parametrize("msg,hexwire", GOLDEN, ids=[type(g[0]).__name__ for g in GOLDEN])
def test_golden_bytes(msg: object, hexwire: str) -> None:
    wire = bytes.fromhex(hexwire.replace(" ", ""))
    assert msg.encode() == wire  # type: ignore[attr-defined]
    if isinstance(msg, m.StartupPacket):
        assert m.decode_startup_packet(wire[4:]) == msg
    else:
        assert type(msg).decode(wire[5:]) == msg


# --- message details ---------------------------------------------------------


def test_protocol_violation_carries_sqlstate() -> None:
    assert ProtocolViolation.sqlstate == "08P01"
    assert ProtocolViolation("x").sqlstate == "08P01"


def test_unknown_type_bytes() -> None:
    with pytest.raises(ProtocolViolation, match="invalid frontend message type 'x'"):
        m.decode_frontend(b"x", b"")
    with pytest.raises(ProtocolViolation, match="invalid backend message type 'Q'"):
        m.decode_backend(b"Q", b"")


def test_registries_cover_the_protocol() -> None:
    assert set(m.FRONTEND_MESSAGES) == {b"QPBDESHCdcfFXp"[i : i + 1] for i in range(14)}
    assert set(m.BACKEND_MESSAGES) == {bytes([c]) for c in b"RK23CdcGHWDIEVvnNAtS1sZT"}
    assert m.FRONTEND_MESSAGES[b"p"] is m.PasswordMessage
    assert m.FRONTEND_MESSAGES[b"d"] is m.BACKEND_MESSAGES[b"d"] is m.CopyData


def test_authentication_dispatch() -> None:
    payload = m.AuthenticationSASLContinue(b"r=abc").encode()[5:]
    assert m.decode_authentication(payload) == m.AuthenticationSASLContinue(b"r=abc")
    assert m.BACKEND_MESSAGES[b"R"].decode(payload) == m.AuthenticationSASLContinue(b"r=abc")
    assert isinstance(m.decode_backend(b"R", payload), m.Authentication)
    # A subclass only accepts its own code.
    with pytest.raises(ProtocolViolation):
        m.AuthenticationSASLFinal.decode(payload)
    with pytest.raises(ProtocolViolation, match="unknown authentication request code 6"):
        m.decode_authentication(struct.pack("!i", 6))
    # Same data, different request: not equal.
    assert m.AuthenticationSASLContinue(b"x") != m.AuthenticationSASLFinal(b"x")


def test_error_response_helpers() -> None:
    err = m.ErrorResponse.build("FATAL", "28P01", "bad password", detail="d", hint="h")
    assert [code for code, _ in err.fields] == ["S", "V", "C", "M", "D", "H"]
    assert err.sqlstate == "28P01" and err.message == "bad password"
    assert err.field("D") == "d" and err.field("P") is None
    notice = m.NoticeResponse.build("WARNING", "01000", "careful")
    assert notice.encode()[:1] == b"N" and notice.sqlstate == "01000"
    with pytest.raises(ValueError):
        m.ErrorResponse.build("ERROR", "bad", "x")
    with pytest.raises(ValueError):
        m.ErrorResponse((("SV", "x"),)).encode()


def test_bind_format_rules() -> None:
    bind = m.Bind("", "", (1,), (b"a", b"b"), ())
    assert bind.param_format(1) == 1
    assert m.Bind("", "", (), (b"a",), ()).param_format(0) == 0
    assert m.Bind("", "", (0, 1), (b"a", b"b"), ()).param_format(1) == 1
    bad = m.Bind("", "", (0, 1), (b"a", b"b", b"c"), ()).encode()[5:]
    with pytest.raises(ProtocolViolation, match="2 format codes for 3 values"):
        m.Bind.decode(bad)
    bad_call = m.FunctionCall(1, (0, 1), (b"a",), 0).encode()[5:]
    with pytest.raises(ProtocolViolation):
        m.FunctionCall.decode(bad_call)


def test_null_length_other_than_minus_one_is_rejected() -> None:
    payload = struct.pack("!Hi", 1, -2)
    with pytest.raises(ProtocolViolation, match="invalid value length -2"):
        m.DataRow.decode(payload)


def test_subtype_and_status_checks() -> None:
    with pytest.raises(ProtocolViolation, match="subtype"):
        m.Describe.decode(b"X\0")
    with pytest.raises(ProtocolViolation, match="status"):
        m.ReadyForQuery.decode(b"Q")
    with pytest.raises(ValueError):
        m.ReadyForQuery(b"Q").encode()
    with pytest.raises(ValueError):
        m.Close(b"X", "").encode()


@pytest.mark.parametrize("size,ok", [(3, False), (4, True), (32, True), (256, True), (257, False)])
def test_secret_key_lengths(size: int, ok: bool) -> None:
    key = bytes(size)
    key_data = struct.pack("!I", 1) + key
    cancel = struct.pack("!II", m.CANCEL_REQUEST_CODE, 1) + key
    if ok:
        assert m.BackendKeyData.decode(key_data).secret == key
        assert m.decode_startup_packet(cancel) == m.CancelRequest(1, key)
    else:
        with pytest.raises(ProtocolViolation, match="secret key"):
            m.BackendKeyData.decode(key_data)
        with pytest.raises(ProtocolViolation, match="secret key"):
            m.decode_startup_packet(cancel)
        with pytest.raises(ProtocolViolation):
            m.CancelRequest(1, key).encode()


def test_password_message_must_be_one_string() -> None:
    assert m.PasswordMessage.decode(b"md5abc\0") == m.PasswordMessage(b"md5abc")
    for payload in (b"", b"abc", b"a\0b\0", b"a\0\0"):
        with pytest.raises(ProtocolViolation, match="password packet size"):
            m.PasswordMessage.decode(payload)
    with pytest.raises(ValueError):
        m.PasswordMessage(b"a\0b").encode()


def test_strings_refuse_embedded_nul_and_keep_odd_bytes() -> None:
    with pytest.raises(ValueError, match="NUL"):
        m.Query("SELECT 1\0; DROP TABLE t").encode()
    raw = b"SELECT '\xff\xfe\xc3'\0"
    msg = m.Query.decode(raw)
    assert msg.encode()[5:] == raw


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.Query.decode(b"SELECT 1\0junk\0")
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.Sync.decode(b"\0")
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.AuthenticationOk.decode(struct.pack("!ii", 0, 0))


def test_sasl_initial_response_with_and_without_data() -> None:
    for data in (None, b"", b"n,,n=,r=abc"):
        msg = m.SASLInitialResponse("SCRAM-SHA-256", data)
        assert m.SASLInitialResponse.decode(msg.encode()[5:]) == msg


# --- FrameReader ---------------------------------------------------------------


def read_all(reader: FrameReader) -> list[tuple[bytes, bytes]]:
    frames = []
    while (item := reader.next_frame()) is not NEED_DATA:
        frames.append(item)
    return frames


STREAM = b"".join(
    msg.encode()
    for msg in (
        m.RowDescription((m.FieldDescription("n", 0, 0, 23, 4, -1, 0),)),
        *(m.DataRow((str(i).encode(), None, b"x" * i)) for i in range(50)),
        m.CommandComplete("SELECT 50"),
        m.CopyData(b""),
        m.ReadyForQuery(b"I"),
    )
)


def test_frame_reader_whole_and_bytewise_agree() -> None:
    whole = FrameReader(max_length=1 << 20)
    whole.receive_data(STREAM)
    expected = read_all(whole)
    assert len(expected) == 54 and whole.buffered() == 0

    bytewise = FrameReader(max_length=1 << 20)
    got = []
    for i in range(len(STREAM)):
        bytewise.receive_data(STREAM[i : i + 1])
        got.extend(read_all(bytewise))
    assert got == expected
    assert [m.decode_backend(t, p) for t, p in got][-1] == m.ReadyForQuery(b"I")


@FAST
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_frame_reader_any_chunking(cuts: list[int]) -> None:
    reader = FrameReader(max_length=1 << 20)
    got = []
    edges = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(edges):
        reader.receive_data(STREAM[a:b])
        got.extend(read_all(reader))
    assert b"".join(frame(t, p) for t, p in got) == STREAM


def test_frame_reader_survives_compaction() -> None:
    # Enough traffic to cross the compaction threshold many times, fed in
    # chunks that split headers and bodies.
    msgs = [m.CopyData(bytes([i % 251]) * (i % 700)) for i in range(2000)]
    stream = b"".join(x.encode() for x in msgs)
    reader = FrameReader(max_length=1 << 20)
    got = []
    for i in range(0, len(stream), 4099):
        reader.receive_data(stream[i : i + 4099])
        got.extend(read_all(reader))
    assert [m.CopyData.decode(p) for _, p in got] == msgs


def test_truncated_frame_is_not_consumed() -> None:
    wire = m.Query("SELECT 1").encode()
    reader = FrameReader(max_length=100)
    reader.receive_data(wire[:-1])
    for _ in range(3):
        assert reader.next_frame() is NEED_DATA
    assert reader.buffered() == len(wire) - 1
    reader.receive_data(wire[-1:])
    assert reader.next_frame() == (b"Q", b"SELECT 1\0")
    assert reader.next_frame() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


@pytest.mark.parametrize("length", [-3, -1, 0, 3, -(2**31)])
def test_bad_length_raises_as_soon_as_header_is_in(length: int) -> None:
    reader = FrameReader(max_length=1000)
    reader.receive_data(b"Q" + struct.pack("!i", length))
    expected = f"invalid message length {length} for message type 'Q'"
    with pytest.raises(ProtocolViolation, match=expected):
        reader.next_frame()


def test_oversize_raises_before_the_body_arrives() -> None:
    reader = FrameReader(max_length=268435456)
    reader.receive_data(b"d" + struct.pack("!i", 300_000_000))
    with pytest.raises(
        ProtocolViolation, match="message of 300000000 bytes exceeds the limit of 268435456 bytes"
    ):
        reader.next_frame()


def test_max_length_is_inclusive() -> None:
    reader = FrameReader(max_length=10)
    reader.receive_data(frame(b"d", b"123456"))  # length field 10
    assert reader.next_frame() == (b"d", b"123456")
    reader.receive_data(frame(b"d", b"1234567"))
    with pytest.raises(ProtocolViolation):
        reader.next_frame()


def test_take_all_returns_the_unread_bytes() -> None:
    reader = FrameReader(max_length=100)
    reader.receive_data(m.Sync().encode() + b"\x16\x03\x01partial")
    assert reader.next_frame() == (b"S", b"")
    assert reader.take_all() == b"\x16\x03\x01partial"
    assert reader.buffered() == 0 and reader.next_frame() is NEED_DATA


# --- StartupReader and startup packets -------------------------------------------


def test_startup_reader_all_kinds_in_one_stream() -> None:
    packets = [
        m.SSLRequest(),
        m.GSSENCRequest(),
        m.CancelRequest(99, b"k" * 32),
        m.StartupMessage(3, 2, (("user", "u"), ("database", "d"), ("_pq_.protocol_managed", "on"))),
    ]
    stream = b"".join(p.encode() for p in packets)
    reader = StartupReader()
    got = []
    for i in range(len(stream)):
        reader.receive_data(stream[i : i + 1])
        while (body := reader.next_packet()) is not NEED_DATA:
            got.append(m.decode_startup_packet(body))
    assert got == packets
    assert got[3].param("_pq_.protocol_managed") == "on"
    assert got[3].param("missing") is None


def test_startup_param_last_wins_like_postgres() -> None:
    msg = m.StartupMessage(3, 0, (("user", "a"), ("user", "b")))
    assert m.decode_startup_packet(msg.encode()[4:]).param("user") == "b"


@pytest.mark.parametrize("major,minor", [(2, 0), (1, 0), (4, 0), (1234, 5679 + 10)])
def test_wrong_major_version(major: int, minor: int) -> None:
    body = struct.pack("!HH", major, minor) + b"user\0u\0\0"
    with pytest.raises(ProtocolViolation, match=f"unsupported frontend protocol {major}.{minor}"):
        m.decode_startup_packet(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x03\x00\x00user\0u\0",  # no final terminator
        b"\x00\x03\x00\x00user\0u\0\0\0",  # bytes after it
        b"\x00\x03\x00\x00user\0",  # name without value
        b"\x00\x03\x00",  # short version
        struct.pack("!II", m.SSL_REQUEST_CODE, 0),  # SSLRequest with extra bytes
        struct.pack("!II", m.CANCEL_REQUEST_CODE, 1),  # cancel without key
    ],
)
def test_malformed_startup_packets(body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        m.decode_startup_packet(body)


def test_startup_length_limits() -> None:
    # PostgreSQL bounds the body (length minus 4) by MAX_STARTUP_PACKET_LENGTH.
    limits = [
        (7, False),
        (8, True),
        (MAX_STARTUP_PACKET_LENGTH + 4, True),
        (MAX_STARTUP_PACKET_LENGTH + 5, False),
        (-8, False),
    ]
    for length, ok in limits:
        reader = StartupReader()
        reader.receive_data(struct.pack("!i", length))
        if ok:
            assert reader.next_packet() is NEED_DATA
        else:
            with pytest.raises(ProtocolViolation):
                reader.next_packet()
    reader = StartupReader()
    reader.receive_data(b"\x16\x03\x01\x02")  # a TLS ClientHello, not a packet
    with pytest.raises(ProtocolViolation, match="exceeds the limit"):
        reader.next_packet()


def test_ssl_request_then_tls_bytes() -> None:
    reader = StartupReader()
    reader.receive_data(m.SSLRequest().encode() + b"\x16\x03\x01")
    assert m.decode_startup_packet(reader.next_packet()) == m.SSLRequest()  # type: ignore[arg-type]
    # Bytes sent before the server answered must be visible to the caller
    # (CVE-2021-23214): take_all hands them over.
    assert reader.buffered() == 3
    assert reader.take_all() == b"\x16\x03\x01"
