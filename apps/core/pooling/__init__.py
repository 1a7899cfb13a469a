"""A PostgreSQL backend for a transaction-pooling PgBouncer (KCM_DATABASE_POOLING=transaction).

Set as Django's ENGINE by the settings; see `apps.core.pooling.base`."""
