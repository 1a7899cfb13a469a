"""The periodic tasks Celery beat queues, and how often: one place for every schedule.

Imported by name in settings.py; each cadence comes from the environment like any setting
(see README "Configuration").
"""

from __future__ import annotations

from kms_project.env import env_int

CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "keychain-deletion-sweep": {
        "task": "apps.keychain.tasks.deletion_sweep",
        "schedule": env_int("KCM_DELETION_SWEEP_SECONDS", 60, minimum=1),
    },
    # Chains the audit events that processes which died (or are idle) left pending.
    "audit-seal": {"task": "apps.tenants.tasks.audit_seal_all", "schedule": 30},
    "audit-checkpoints": {
        "task": "apps.tenants.tasks.audit_checkpoint_all",
        "schedule": env_int("KCM_AUDIT_CHECKPOINT_SECONDS", 300, minimum=1),
    },
    # Delivery to the tenants' audit sinks that are due (apps.audit.streaming, docs/audit.md).
    "audit-stream": {
        "task": "apps.tenants.tasks.audit_stream_all",
        "schedule": env_int("KCM_AUDIT_STREAM_SECONDS", 5, minimum=1),
    },
    # Approval requests past their expiry are marked EXPIRED (and audited) at least this often.
    "approvals-expire": {
        "task": "apps.approvals.tasks.approvals_expire_all",
        "schedule": env_int("KCM_APPROVALS_EXPIRE_SECONDS", 300, minimum=1),
    },
    "rotation-sweep": {
        "task": "apps.rotation.tasks.rotation_sweep",
        "schedule": env_int("KCM_ROTATION_SWEEP_SECONDS", 60, minimum=1),
    },
    # Removes expired BYOK wrapping keys and imported material past its expiry.
    "keychain-byok-sweep": {
        "task": "apps.keychain.tasks.byok_sweep",
        "schedule": env_int("KCM_BYOK_SWEEP_SECONDS", 60, minimum=1),
    },
    # Maps what each customer's key manager says (HYOK) to the L1's state.
    "keychain-hyok-sync": {
        "task": "apps.keychain.tasks.hyok_sync",
        "schedule": env_int("KCM_HYOK_SYNC_SECONDS", 60, minimum=1),
    },
}
