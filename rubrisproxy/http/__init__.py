"""HTTP/1.1 messages shared by the client-facing and origin sides."""

from ._auth import Challenge, best, challenges, digest
from ._auth import basic as basic_credentials
from ._errors import HTTPError, error_response, quoted, reason_phrase
from ._headers import (
    CLIENT_CLAIMS,
    FORWARDING,
    HOP_BY_HOP,
    NONE,
    Headers,
    connection_tokens,
    drop_listed,
    serialize_headers,
    spellings,
)
from ._request import RequestHandler, RequestHead, RequestParser
from ._response import ResponseHandler, ResponseHead, ResponseParser
from ._rules import (
    AMBIGUOUS,
    Address,
    Network,
    RedirectTarget,
    Template,
    client_ip,
    del_header,
    field_safe,
    header_value,
    in_networks,
    key_value,
    masked,
    networks,
    set_header,
)
from ._target import Target, normalise_path, resolve, route_host, split_absolute, valid_host
from ._version import LaterVersion

__all__ = [
    "Challenge",
    "basic_credentials",
    "best",
    "challenges",
    "digest",
    "Address",
    "Network",
    "RedirectTarget",
    "Template",
    "client_ip",
    "del_header",
    "field_safe",
    "header_value",
    "key_value",
    "AMBIGUOUS",
    "in_networks",
    "masked",
    "networks",
    "set_header",
    "CLIENT_CLAIMS",
    "FORWARDING",
    "HOP_BY_HOP",
    "HTTPError",
    "Headers",
    "NONE",
    "RequestHandler",
    "LaterVersion",
    "RequestHead",
    "RequestParser",
    "ResponseHandler",
    "ResponseHead",
    "ResponseParser",
    "Target",
    "connection_tokens",
    "drop_listed",
    "error_response",
    "normalise_path",
    "quoted",
    "reason_phrase",
    "resolve",
    "route_host",
    "serialize_headers",
    "spellings",
    "split_absolute",
    "valid_host",
]
