"""Every message of PostgreSQL wire protocol 3.0 and 3.2, as frozen dataclasses.

Each message class has ``TYPE`` (its type byte; startup packets have none),
``encode()`` returning complete wire bytes, and ``decode(payload)`` taking the
payload without its header.  Malformed payloads raise ProtocolViolation.
"""

from __future__ import annotations

from collections.abc import Callable

from ._wire import type_repr
from .errors import ProtocolViolation
from .messages_auth import (
    AUTHENTICATION_MESSAGES,
    Authentication,
    AuthenticationCleartextPassword,
    AuthenticationGSS,
    AuthenticationGSSContinue,
    AuthenticationKerberosV5,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    AuthenticationSSPI,
    GSSResponse,
    PasswordMessage,
    SASLInitialResponse,
    SASLResponse,
    decode_authentication,
)
from .messages_backend import (
    BackendKeyData,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FieldDescription,
    FunctionCallResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
)
from .messages_frontend import (
    Bind,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    Describe,
    Execute,
    Flush,
    FunctionCall,
    Parse,
    Query,
    Sync,
    Terminate,
)
from .messages_startup import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_SECRET_KEY_LENGTH,
    MIN_SECRET_KEY_LENGTH,
    SSL_REQUEST_CODE,
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupPacket,
    decode_startup_packet,
)

FrontendMessage = (
    Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Sync
    | Flush
    | Close
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
    | Terminate
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | GSSResponse
)

BackendMessage = (
    Authentication
    | BackendKeyData
    | BindComplete
    | CloseComplete
    | CommandComplete
    | CopyData
    | CopyDone
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | DataRow
    | EmptyQueryResponse
    | ErrorResponse
    | FunctionCallResponse
    | NegotiateProtocolVersion
    | NoData
    | NoticeResponse
    | NotificationResponse
    | ParameterDescription
    | ParameterStatus
    | ParseComplete
    | PortalSuspended
    | ReadyForQuery
    | RowDescription
)

# 'p' is shared by PasswordMessage, SASLInitialResponse, SASLResponse and
# GSSResponse; the registry names PasswordMessage, and a session expecting
# another one calls that class's decode() itself.
FRONTEND_MESSAGES: dict[bytes, type[FrontendMessage]] = {
    cls.TYPE: cls
    for cls in (
        Query,
        Parse,
        Bind,
        Describe,
        Execute,
        Sync,
        Flush,
        Close,
        CopyData,
        CopyDone,
        CopyFail,
        FunctionCall,
        Terminate,
        PasswordMessage,
    )
}

# 'R' maps to the Authentication base, whose decode() dispatches on the code.
BACKEND_MESSAGES: dict[bytes, type[BackendMessage]] = {
    cls.TYPE: cls
    for cls in (
        Authentication,
        BackendKeyData,
        BindComplete,
        CloseComplete,
        CommandComplete,
        CopyData,
        CopyDone,
        CopyInResponse,
        CopyOutResponse,
        CopyBothResponse,
        DataRow,
        EmptyQueryResponse,
        ErrorResponse,
        FunctionCallResponse,
        NegotiateProtocolVersion,
        NoData,
        NoticeResponse,
        NotificationResponse,
        ParameterDescription,
        ParameterStatus,
        ParseComplete,
        PortalSuspended,
        ReadyForQuery,
        RowDescription,
    )
}

_FRONTEND_DECODERS: dict[bytes, Callable[[bytes], FrontendMessage]] = {
    t: cls.decode for t, cls in FRONTEND_MESSAGES.items()
}
_BACKEND_DECODERS: dict[bytes, Callable[[bytes], BackendMessage]] = {
    t: cls.decode for t, cls in BACKEND_MESSAGES.items()
}
_BACKEND_DECODERS[b"R"] = decode_authentication


def decode_frontend(type_byte: bytes, payload: bytes) -> FrontendMessage:
    """Decode a message a client sent, as returned by FrameReader.next_frame()."""
    decode = _FRONTEND_DECODERS.get(type_byte)
    if decode is None:
        raise ProtocolViolation(f"invalid frontend message type {type_repr(type_byte)}")
    return decode(payload)


def decode_backend(type_byte: bytes, payload: bytes) -> BackendMessage:
    """Decode a message a server sent, as returned by FrameReader.next_frame()."""
    decode = _BACKEND_DECODERS.get(type_byte)
    if decode is None:
        raise ProtocolViolation(f"invalid backend message type {type_repr(type_byte)}")
    return decode(payload)


__all__ = [
    "AUTHENTICATION_MESSAGES",
    "BACKEND_MESSAGES",
    "CANCEL_REQUEST_CODE",
    "FRONTEND_MESSAGES",
    "GSSENC_REQUEST_CODE",
    "MAX_SECRET_KEY_LENGTH",
    "MIN_SECRET_KEY_LENGTH",
    "SSL_REQUEST_CODE",
    "Authentication",
    "AuthenticationCleartextPassword",
    "AuthenticationGSS",
    "AuthenticationGSSContinue",
    "AuthenticationKerberosV5",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationSSPI",
    "BackendKeyData",
    "BackendMessage",
    "Bind",
    "BindComplete",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "EmptyQueryResponse",
    "ErrorResponse",
    "Execute",
    "FieldDescription",
    "Flush",
    "FrontendMessage",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "GSSResponse",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "Query",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupMessage",
    "StartupPacket",
    "Sync",
    "Terminate",
    "decode_authentication",
    "decode_backend",
    "decode_frontend",
    "decode_startup_packet",
]
