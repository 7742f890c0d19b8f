"""CheckRequest protobuf -> HttpAttributes, shared by every transport. (Responses are written
as bytes by authz_wire.)"""

from __future__ import annotations

from ratelimitd.model.messages import HttpAttributes
from ratelimitd.protos.envoy.service.auth.v3 import external_auth_pb2


def decode(message: external_auth_pb2.CheckRequest) -> HttpAttributes:
    """The HTTP request a CheckRequest describes.

    Header names are lower-cased. Headers sent as a list (ext_authz's `encode_raw_headers`)
    are read too: a name given several times gets its values joined by commas, as Envoy joins
    them in the map it otherwise sends, and bytes that are not UTF-8 become U+FFFD.
    """
    attributes = message.attributes
    http = attributes.request.http
    headers = {name.lower(): value for name, value in http.headers.items()}
    for header in http.header_map.headers:
        name = header.key.lower()
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous},{value}"
    source = attributes.source.address.socket_address
    destination = attributes.destination.address.socket_address
    return HttpAttributes(
        method=http.method,
        path=http.path,
        host=http.host,
        scheme=http.scheme,
        headers=headers,
        source_address=source.address,
        source_port=source.port_value,
        destination_address=destination.address,
        destination_port=destination.port_value,
        context_extensions=dict(attributes.context_extensions),
        principal=attributes.source.principal,
    )
