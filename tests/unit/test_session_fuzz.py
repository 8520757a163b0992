"""Fuzzing the session's conversation: whatever a client sends, however it is
split, the conversation either handles it or ends the session with one
protocol violation (08P01); it never fails with an exception of its own.
What it sends upstream does not depend on where the bytes were split, unless
the session ends: then the messages that arrived in the same chunk as the
violation, before it, are not sent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgshroud import sqlstate
from pgshroud.proxy.codec.messages import (
    Bind,
    Close,
    Describe,
    ErrorResponse,
    Execute,
    Flush,
    Parse,
    Query,
    Sync,
)
from pgshroud.proxy.session.effects import Side
from tests.session_script import Script, backend

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_names = st.sampled_from(["", "s1", "p1", "pgshroud_r1", "x" * 70])
_sql = st.sampled_from(["SELECT 1", "SELECT name FROM patients", "SELECT x FROM unlisted", "SELECT 1; SELECT 2",
                        "SET pgshroud.epsilon = 0.5", "BEGIN", "", "DEALLOCATE s1"])
_valid = st.one_of(
    st.builds(lambda sql: Query(sql).encode(), _sql),
    st.builds(lambda name, sql: Parse(name, sql, ()).encode(), _names, _sql),
    st.builds(lambda portal, name: Bind(portal, name, (), (), ()).encode(), _names, _names),
    st.builds(lambda kind, name: Describe(kind, name).encode(), st.sampled_from([b"S", b"P"]), _names),
    st.builds(lambda name, rows: Execute(name, rows).encode(), _names, st.integers(0, 3)),
    st.builds(lambda kind, name: Close(kind, name).encode(), st.sampled_from([b"S", b"P"]), _names),
    st.just(Sync().encode()),
    st.just(Flush().encode()),
)
# Valid messages, with now and then a frame of random bytes among them.
_junk = st.builds(lambda kind, body: kind + (len(body) + 4).to_bytes(4, "big") + body,
                  st.sampled_from([b"Q", b"P", b"B", b"D", b"E", b"C", b"F", b"?", b"S"]), st.binary(max_size=12))
streams = st.lists(st.one_of(_valid, _valid, _valid, _junk), min_size=1, max_size=8).map(b"".join)


def _feed(data: bytes, cuts: list[int]) -> Script:
    script = Script("clinician")
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        script.client(data[last:cut])
        last = cut
    return script


@FUZZ
@given(streams, st.lists(st.integers(0, 400), max_size=6))
def test_any_client_input_is_handled_or_ends_in_a_protocol_violation(data, cuts):
    whole = _feed(data, [])
    split = _feed(data, cuts)
    got = whole.client_got()
    assert split.client_got() == got
    assert split.closed == whole.closed
    if not whole.closed:
        assert split.upstream_sent() == whole.upstream_sent()
        return
    assert whole.closed == {Side.CLIENT, Side.UPSTREAM}
    (error,) = backend(got)
    assert isinstance(error, ErrorResponse) and error.sqlstate == sqlstate.PROTOCOL_VIOLATION
