"""KCM's client: envelope encryption with L4 data keys, and the `kcm` command line.

    from kcm_client import Client, DataKeyCache

    with Client("https://acme.kcm.example", token, cache=DataKeyCache()) as kcm:
        message = kcm.encrypt(b"...", service_key="payments", context={"record": "42"})
        kcm.decrypt(message, context={"record": "42"})

The message format is docs/message-format.md; every failure is a `KcmError` with a `code`.
"""

from .cache import DataKeyCache
from .client import Client
from .errors import KcmError
from .message import DEFAULT_FRAME_SIZE, Header, canonical_context

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "Client",
    "DataKeyCache",
    "Header",
    "KcmError",
    "canonical_context",
]
