"""The embedded broker (`make run` without KCM_BROKER_URL): kombu's filesystem transport,
publishing by rename.

kombu 5.7 writes a message file in place; a consumer listing the folder at that moment takes
the file while it is still empty, fails to decode it, and the Celery worker exits
("Unrecoverable error: JSONDecodeError"). Written aside under a name no queue matches, then
renamed (atomic within one filesystem), a message is only ever seen whole.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps


class AtomicPublishChannel(filesystem.Channel):
    # The stubs disagree with themselves here (filesystem.Channel vs. its base class).
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        aside = os.path.join(self.data_folder_out, f".{name}.part")
        with open(aside, "wb") as handle:
            handle.write(dumps(payload).encode())
        os.replace(aside, os.path.join(self.data_folder_out, name))


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicPublishChannel


TRANSPORT_ALIASES.setdefault("kcmfs", f"{__name__}:AtomicFilesystemTransport")
