"""The wire format (SPEC.md section 3): payloads and results are one CBOR value each, job entries are flat field
lists."""

import io

import cbor2

from .errors import PayloadTooLarge, Protocol

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""The largest payload a rill worker accepts by default (1 MiB)."""


def encode(value, limit=DEFAULT_MAX_PAYLOAD):
    """``value`` as CBOR bytes, refused over ``limit`` bytes (the consumers' limit) or empty."""
    data = cbor2.dumps(value)
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit)
    return data


def decode(data):
    """Exactly one CBOR value (trailing bytes are an error, SPEC.md section 3)."""
    f = io.BytesIO(data)
    value = cbor2.CBORDecoder(f).decode()
    if f.tell() != len(data):
        raise Protocol("payload", f"{len(data) - f.tell()} bytes after the CBOR value")
    return value


def ms(seconds):
    """Seconds (int or float) as whole milliseconds."""
    return int(round(seconds * 1000))
