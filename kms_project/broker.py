"""The embedded broker (`make run` without KCM_BROKER_URL): kombu's filesystem transport,
publishing by rename, and surviving its folder's absence.

kombu 5.7 writes a message file in place; a consumer listing the folder at that moment takes
the file while it is still empty, fails to decode it, and the Celery worker exits
("Unrecoverable error: JSONDecodeError"). Written aside under a name no queue matches, then
renamed (atomic within one filesystem), a message is only ever seen whole.

The folder is the broker: when it is gone or unreadable (a lost mount: the broker is down),
kombu 5.7's consumer raised FileNotFoundError and the Celery worker exited ("Unrecoverable
error"), never to come back by itself. Here a consumer finds the queue empty until the folder
is back (one warning when it goes, one when it returns), and a publisher gets kombu's
ConnectionError, which Celery's publish retry policy understands and a caller can report.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from queue import Empty
from typing import Any

from amqp.exceptions import ConnectionError as BrokerConnectionError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)


class AtomicPublishChannel(filesystem.Channel):
    # The stubs disagree with themselves here (filesystem.Channel vs. its base class).
    _unavailable = False  # per channel: whether the folder was missing at the last poll

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        aside = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(aside, "wb") as handle:
                handle.write(dumps(payload).encode())
            os.replace(aside, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise BrokerConnectionError(
                f"the broker's folder is unavailable ({type(exc).__name__})"
            ) from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        try:
            os.stat(self.data_folder_in)
        except OSError as exc:
            if not self._unavailable:
                self._unavailable = True
                logger.warning("broker folder unavailable (%s); waiting", type(exc).__name__)
            raise Empty() from None
        if self._unavailable:
            self._unavailable = False
            logger.warning("broker folder available again")
        try:
            return super()._get(queue)
        except (FileNotFoundError, NotADirectoryError):
            raise Empty() from None  # gone between the check and the listing


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicPublishChannel


TRANSPORT_ALIASES.setdefault("kcmfs", f"{__name__}:AtomicFilesystemTransport")
