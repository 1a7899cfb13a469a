from __future__ import annotations

from apps.core.errors import Conflict, NotFound, ValidationFailed


class RotationInProgress(Conflict):
    """Raised with `job_id` (and rendered with it in the problem body)."""

    code = "rotation_in_progress"
    title = "A rotation of this key is already running"


class JobNotFound(NotFound):
    code = "rotation_job_not_found"
    title = "No such rotation job"


class InvalidJobState(Conflict):
    code = "invalid_job_state"
    title = "The job's state does not allow this"


class JobSuperseded(Conflict):
    code = "rotation_job_superseded"
    title = "The key was rotated again since this job; start a new rotation instead"


class RotationNotSupported(ValidationFailed):
    code = "rotation_not_supported"
    title = "This key cannot be rotated this way"


class PlatformRunNotFound(NotFound):
    code = "platform_rotation_not_found"
    title = "No such platform rotation"
