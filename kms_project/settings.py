"""KCM settings: read from the environment only (see README "Configuration")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from kombu import Queue

from kms_project import logconfig
from kms_project.env import (
    ImproperlyConfiguredEnv,
    database_from_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_optional,
    env_rate,
    env_secret,
    env_str,
)

# A setting Django reads from this module, hence the explicit re-export.
from kms_project.settings_beat import CELERY_BEAT_SCHEDULE as CELERY_BEAT_SCHEDULE

BASE_DIR = Path(__file__).resolve().parent.parent

KCM_ENV = env_choice("KCM_ENV", ("development", "production", "test"), "development")
PRODUCTION = KCM_ENV == "production"
DEBUG = env_bool("KCM_DEBUG", default=False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfiguredEnv("KCM_DEBUG cannot be true when KCM_ENV=production")

KCM_STATE_DIR = Path(env_str("KCM_STATE_DIR", str(BASE_DIR / ".state")))

_secret_key = env_secret("KCM_SECRET_KEY")
if _secret_key is None:
    if PRODUCTION:
        raise ImproperlyConfiguredEnv("KCM_SECRET_KEY (or KCM_SECRET_KEY_FILE) must be set")
    _secret_key = "development-only-insecure-key-set-KCM_SECRET_KEY-in-production-0123456789"
elif PRODUCTION and len(_secret_key) < 50:
    raise ImproperlyConfiguredEnv("KCM_SECRET_KEY must be at least 50 characters")
SECRET_KEY = _secret_key

# Tenants live at <slug>.<KCM_BASE_DOMAIN>; the platform console at the base domain itself.
KCM_BASE_DOMAIN = env_str("KCM_BASE_DOMAIN", "localhost").lower()
ALLOWED_HOSTS = env_list("KCM_ALLOWED_HOSTS", [KCM_BASE_DOMAIN, f".{KCM_BASE_DOMAIN}"])
if not PRODUCTION:
    ALLOWED_HOSTS += ["127.0.0.1", "testserver"]

SHARED_APPS = [
    "django_tenants",
    "apps.tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files, not a CDN
    "axes",  # sign-in lockout; its attempts live in the public schema
    "apps.core",
    "apps.keystores",  # platform keys
    "apps.audit",  # in the public schema: the platform log
    "apps.rotation.platform",  # platform-wide rotation runs
    "apps.approvals.platform",  # platform approval requests (terminate a tenant)
    "apps.sso",  # tenants' OpenID Connect providers and linked identities
    "apps.mfa",  # second factors belong to people, who sign in to several tenants
]
TENANT_APPS = [
    "apps.keychain",
    "apps.audit",
    "apps.rotation",
    "apps.approvals",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "kms_project.urls_public"
ROOT_URLCONF = "kms_project.urls"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
# Set the search_path once per schema switch, not before every query (a round trip each).
TENANT_LIMIT_SET_CALLS = True
# The schema every new tenant is cloned from (kept migrated by `manage.py kcm_migrate`).
KCM_TEMPLATE_SCHEMA = "kcm_template"

MIDDLEWARE = [
    "apps.core.metrics.RequestMetricsMiddleware",  # first: it times everything below
    "apps.core.middleware.RequestIdMiddleware",
    # /healthz and /readyz: before host validation and tenant routing, on every host.
    "kms_project.health.ProbeMiddleware",
    "apps.core.middleware.BodySizeLimitMiddleware",
    "apps.audit.middleware.AuditContextMiddleware",
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.tenants.middleware.TenantStatusMiddleware",
    "apps.tenants.middleware.ConsolePrincipalMiddleware",
    "apps.mfa.middleware.MfaEnrolmentMiddleware",  # after the principal: it reads it
    "apps.core.middleware.SessionIdleTimeoutMiddleware",
    "axes.middleware.AxesMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.kcm",
                "apps.approvals.context_processors.approvals",
                "apps.sso.context_processors.sso",
            ],
        },
    },
]

WSGI_APPLICATION = "kms_project.wsgi.application"

_database_url = env_optional("KCM_DATABASE_URL")
if _database_url is None:
    raise ImproperlyConfiguredEnv(
        "KCM_DATABASE_URL must be set (`make run` and `make test` set it for you)"
    )
_database = database_from_url(_database_url)
# "transaction" when KCM_DATABASE_URL points at a PgBouncer in transaction-pooling mode: each
# statement then carries its tenant's search_path (apps/core/pooling), and no server-side cursor
# is used. "session": a direct connection, or a pooler in session mode.
KCM_DATABASE_POOLING = env_choice("KCM_DATABASE_POOLING", ("session", "transaction"), "session")
DATABASES = {
    "default": {
        "ENGINE": (
            "apps.core.pooling"
            if KCM_DATABASE_POOLING == "transaction"
            else "django_tenants.postgresql_backend"
        ),
        **_database,
        # Persistent connections: without them every request pays a PostgreSQL connect.
        "CONN_MAX_AGE": env_int("KCM_DB_CONN_MAX_AGE", 600, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "DISABLE_SERVER_SIDE_CURSORS": KCM_DATABASE_POOLING == "transaction",
    }
}
# Session-bound work bypasses the pooler: the key cache's LISTEN and the rewrap runners' locks
# (apps/core/connections.py). None: the same as KCM_DATABASE_URL.
_direct_url = env_optional("KCM_DATABASE_DIRECT_URL")
KCM_DATABASE_DIRECT = (
    database_from_url(_direct_url, "KCM_DATABASE_DIRECT_URL") if _direct_url else None
)
if KCM_DATABASE_POOLING == "transaction" and KCM_DATABASE_DIRECT is None:
    raise ImproperlyConfiguredEnv(
        "KCM_DATABASE_POOLING=transaction needs KCM_DATABASE_DIRECT_URL: a connection straight "
        "to PostgreSQL for LISTEN and session locks (docs/operations.md)"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if KCM_ENV == "test":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves collected files (`manage.py collectstatic`); development finds them in place.
_static_root = env_optional("KCM_STATIC_ROOT")
STATIC_ROOT = (
    Path(_static_root) if _static_root else (BASE_DIR / "staticfiles" if PRODUCTION else None)
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# Request bodies over 1 MiB are refused with 413 before any view runs.
KCM_MAX_BODY_BYTES = env_int("KCM_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = KCM_MAX_BODY_BYTES

# Security: sessions and CSRF on; production hardening passes `check --deploy`.
SESSION_COOKIE_HTTPONLY = True
# Strict: the console is never entered signed-in from another site's link or form.
SESSION_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_SAMESITE = "Strict"
SESSION_COOKIE_AGE = env_int("KCM_SESSION_AGE_SECONDS", 8 * 3600, minimum=60)
# A console session unused this long ends (apps.core.middleware.SessionIdleTimeoutMiddleware).
KCM_SESSION_IDLE_SECONDS = env_int("KCM_SESSION_IDLE_SECONDS", 30 * 60, minimum=60)
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("KCM_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("KCM_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading is hard to undo (browsers ship the list): only when the operator asks for it.
    SECURE_HSTS_PRELOAD = env_bool("KCM_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # check --deploy asks for preload (W021); not preloading is a decision, not an oversight.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    if env_bool("KCM_BEHIND_TLS_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("KCM_CSRF_TRUSTED_ORIGINS", [])
# Only our own scripts, styles and connections; no inline code (the console's live in static/).
_CSP_SELF = ("script-src", "style-src", "font-src", "connect-src", "form-action")
_CSP_NONE = ("default-src", "frame-ancestors", "base-uri", "object-src")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        **{directive: ["'none'"] for directive in _CSP_NONE},
        **{directive: ["'self'"] for directive in _CSP_SELF},
        "img-src": ["'self'", "data:"],
    }
}
# Proxies believed about X-Forwarded-For (apps.core.clientip); none: the client is the peer.
KCM_TRUSTED_PROXIES = env_networks("KCM_TRUSTED_PROXIES", [])
# API rate limits per web process, by client address and by token (apps.core.throttling).
KCM_API_RATE_PER_ADDRESS = env_rate("KCM_API_RATE_PER_ADDRESS", "1000/s")
KCM_API_RATE_PER_TOKEN = env_rate("KCM_API_RATE_PER_TOKEN", "500/s")
KCM_TOKEN_MAX_LIFETIME_DAYS = env_int("KCM_TOKEN_MAX_LIFETIME_DAYS", 365, minimum=1)
# Console sign-in (django-axes): after this many failures in a row for one username, or from
# one client address, sign-in is refused (429) for the lockout time, even with the right password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
KCM_LOGIN_FAILURE_LIMIT = env_int("KCM_LOGIN_FAILURE_LIMIT", 5, minimum=1)
KCM_LOGIN_LOCKOUT_SECONDS = env_int("KCM_LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
# Single sign-on (apps.sso): a provider's issuer must be https, unless this allows http
# (development and tests, where the provider runs on localhost).
KCM_SSO_ALLOW_HTTP = env_bool("KCM_SSO_ALLOW_HTTP", not PRODUCTION)
# How long an invitation link (apps/tenants/invitations.py) works unless accepted or revoked.
KCM_INVITATION_TTL_HOURS = env_int("KCM_INVITATION_TTL_HOURS", 72, minimum=1)
# Terminating a tenant waits for this many other platform operators' approvals (0: off).
KCM_PLATFORM_APPROVALS_REQUIRED = env_int("KCM_PLATFORM_APPROVALS_REQUIRED", 0, minimum=0)
KCM_PLATFORM_APPROVAL_EXPIRY_DAYS = env_int("KCM_PLATFORM_APPROVAL_EXPIRY_DAYS", 7, minimum=1)
# Platform operators must sign in with a second factor (apps.mfa); tenants set theirs.
KCM_PLATFORM_REQUIRE_MFA = env_bool("KCM_PLATFORM_REQUIRE_MFA", False)
AXES_FAILURE_LIMIT = KCM_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=KCM_LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "apps.core.clientip.client_ip"
AXES_LOCKOUT_CALLABLE = "apps.tenants.views.login_locked_out"
AXES_VERBOSE = False

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.tenants.authentication.ApiTokenAuthentication",
        "apps.tenants.authentication.ConsoleSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.tenants.permissions.HasTenantRole"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.throttling.PrincipalRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KCM API",
    "DESCRIPTION": (
        "Multi-tenant key chain manager. Tenant endpoints live on <tenant>.<base domain>; "
        "platform endpoints on the base domain. Errors are RFC 9457 problem+json with a "
        "stable `code`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Celery: the configured broker, else the embedded filesystem broker under the state folder.
_broker_url = env_optional("KCM_BROKER_URL")
# "kcmfs" is kombu's filesystem transport publishing atomically (kms_project/broker.py).
CELERY_BROKER_URL = _broker_url or "kcmfs://"
if _broker_url is None:
    _broker_dir = KCM_STATE_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Results are stored only for tasks sent with ignore_result=False (e.g. `file:///dir`).
CELERY_RESULT_BACKEND = env_optional("KCM_RESULT_BACKEND")
# Workers must see a revocation's new tenant.key_epoch on the next task: tenant-schemas-celery
# reloads the tenant for every task only while this stays 0 (LISTEN/NOTIFY covers it anyway).
CELERY_TASK_TENANT_CACHE_SECONDS = 0
CELERY_BEAT_SCHEDULE_FILENAME = str(KCM_STATE_DIR / "celerybeat-schedule")
# CELERY_BEAT_SCHEDULE, the periodic tasks and their KCM_*_SECONDS: kms_project/settings_beat.py.

# HSM: a PKCS#11 library (SoftHSM2 in development and tests), or the development-only
# software provider, which refuses to start in production unless explicitly allowed.
KCM_HSM_PROVIDER = env_choice("KCM_HSM_PROVIDER", ("pkcs11", "software"), "pkcs11")
KCM_PKCS11_LIBRARY = env_str("KCM_PKCS11_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so")
KCM_PKCS11_TOKEN_LABEL = env_str("KCM_PKCS11_TOKEN_LABEL", "kcm")
KCM_PKCS11_PIN = env_secret("KCM_PKCS11_PIN")
KCM_PKCS11_TIMEOUT_SECONDS = env_int("KCM_PKCS11_TIMEOUT_SECONDS", 10, minimum=1)
KCM_ALLOW_SOFTWARE_PROVIDER = env_bool("KCM_ALLOW_SOFTWARE_PROVIDER", not PRODUCTION)
KCM_SOFTWARE_PROVIDER_FILE = Path(
    env_str("KCM_SOFTWARE_PROVIDER_FILE", str(KCM_STATE_DIR / "software-provider.keys"))
)
if KCM_HSM_PROVIDER == "software" and not KCM_ALLOW_SOFTWARE_PROVIDER:
    raise ImproperlyConfiguredEnv(
        "KCM_HSM_PROVIDER=software is for development only; set KCM_ALLOW_SOFTWARE_PROVIDER=true "
        "to run it in production anyway"
    )

# Key chain.
KCM_KEY_CACHE_TTL_SECONDS = env_int("KCM_KEY_CACHE_TTL_SECONDS", 300, minimum=1)
KCM_KEY_CACHE_MAX_ENTRIES = env_int("KCM_KEY_CACHE_MAX_ENTRIES", 10000, minimum=1)
# A GCM key must not see more than 2**32 random-nonce encryptions; we stop well before.
KCM_GCM_USAGE_LIMIT = env_int("KCM_GCM_USAGE_LIMIT", 2**32 - 2**24, minimum=1)
KCM_DELETION_MIN_DAYS = env_int("KCM_DELETION_MIN_DAYS", 7, minimum=0)
KCM_DELETION_MAX_DAYS = env_int("KCM_DELETION_MAX_DAYS", 30, minimum=1)

# KCM_LOG_FORMAT (json, or text in development) and KCM_LOG_LEVEL: kms_project/logconfig.py.
LOGGING_CONFIG = "kms_project.logconfig.configure"
LOGGING = logconfig.from_env()
CSRF_FAILURE_VIEW = "apps.core.views.csrf_failure"
# Each process listens for key-chain revocations (PostgreSQL LISTEN/NOTIFY).
KCM_KEY_CACHE_LISTEN = env_bool("KCM_KEY_CACHE_LISTEN", True)
# Encryptions a process reserves at a time per service-key version (see usage limits).
# A crash forfeits at most one block of a version's 2**32 budget; a batch takes at least its size.
KCM_USAGE_BLOCK = env_int("KCM_USAGE_BLOCK", 10000, minimum=1)
# Django's error reports must never show the HSM PIN (its name escapes the default filter).
DEFAULT_EXCEPTION_REPORTER_FILTER = "apps.core.reporting.SecretSafeExceptionReporterFilter"

# Audit log. Switching it off exists only to measure its cost (bench/audit.py).
KCM_AUDIT_ENABLED = env_bool("KCM_AUDIT_ENABLED", True)
KCM_AUDIT_RETENTION_DAYS = env_int("KCM_AUDIT_RETENTION_DAYS", 3650, minimum=1)
# Hot-path events are committed at once and chained by each process every this many seconds.
KCM_AUDIT_SEAL_SECONDS = float(env_int("KCM_AUDIT_SEAL_MILLISECONDS", 500, minimum=0)) / 1000
# The data plane commits concurrent requests' events in one transaction (docs/dataplane.md).
KCM_AUDIT_GROUP_COMMIT = env_bool("KCM_AUDIT_GROUP_COMMIT", False)
# Streaming to sinks (apps.audit.streaming, docs/audit.md): per-step timeout, backoff, batch.
KCM_AUDIT_SINK_TIMEOUT_SECONDS = env_int("KCM_AUDIT_SINK_TIMEOUT_SECONDS", 5, minimum=1)
KCM_AUDIT_SINK_MAX_BACKOFF_SECONDS = env_int("KCM_AUDIT_SINK_MAX_BACKOFF_SECONDS", 300, minimum=1)
KCM_AUDIT_SINK_BATCH = env_int("KCM_AUDIT_SINK_BATCH", 100, minimum=1)
# Hosts (fnmatch patterns) a tenant may point a sink at: none in production until listed.
KCM_AUDIT_SINK_ALLOWED_HOSTS = env_list("KCM_AUDIT_SINK_ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
KCM_AUDIT_EXPORT_DIR = Path(env_str("KCM_AUDIT_EXPORT_DIR", str(KCM_STATE_DIR / "audit-exports")))

# Rotation: policy sweep (beat), rewrap batches, and when a silent job counts as stalled.
# Rewrap jobs have a queue of their own, which every worker also consumes (in turn with the
# default one): the thousands a platform-wide rotation queues must not hold up other tasks.
CELERY_TASK_QUEUES = (Queue("celery"), Queue("kcm-rewrap"))
CELERY_TASK_ROUTES = {"apps.rotation.tasks.rewrap_job_run": {"queue": "kcm-rewrap"}}
# The sweep looks into each tenant's keys when one falls due, and at least this often.
KCM_ROTATION_CHECK_SECONDS = env_int("KCM_ROTATION_CHECK_SECONDS", 3600, minimum=1)
KCM_REWRAP_BATCH_SIZE = env_int("KCM_REWRAP_BATCH_SIZE", 1000, minimum=1)
# A pause between batches lowers a rewrap's load on the database (and slows it down).
KCM_REWRAP_BATCH_PAUSE_MS = env_int("KCM_REWRAP_BATCH_PAUSE_MS", 0, minimum=0)
KCM_REWRAP_STALL_SECONDS = env_int("KCM_REWRAP_STALL_SECONDS", 120, minimum=1)
# BYOK: import parameters (an RSA wrapping key in the HSM and a token) stay valid this long.
# The sweep (beat) removes expired wrapping keys and imported material past its expiry.
KCM_BYOK_IMPORT_TOKEN_HOURS = env_int("KCM_BYOK_IMPORT_TOKEN_HOURS", 24, minimum=1)
# Whether the HSM unwraps RSA-OAEP with SHA-256 (SoftHSM2 2.6 does not; it cannot be probed).
KCM_PKCS11_OAEP_SHA256 = env_bool("KCM_PKCS11_OAEP_SHA256", False)
# HYOK: every call to a customer's key manager is bounded; after BREAKER_FAILURES failures in a
# row the manager is not called again for BREAKER_RESET seconds (requests get 503 at once).
# The sync (beat) maps what the manager says to the L1's state; revocation at the source takes
# effect at the next sync, at the next cache miss, and at the latest after
# KCM_KEY_CACHE_TTL_SECONDS.
KCM_HYOK_TIMEOUT_SECONDS = env_int("KCM_HYOK_TIMEOUT_SECONDS", 3, minimum=1)
KCM_HYOK_BREAKER_FAILURES = env_int("KCM_HYOK_BREAKER_FAILURES", 3, minimum=1)
KCM_HYOK_BREAKER_RESET_SECONDS = env_int("KCM_HYOK_BREAKER_RESET_SECONDS", 10, minimum=1)
# A key manager's "no such key" makes the L1 UNAVAILABLE; a sync at least this long after the
# first such answer that gets it again makes it DESTROYED (an explicit destroyed state at once).
KCM_HYOK_DESTROY_CONFIRM_SECONDS = env_int("KCM_HYOK_DESTROY_CONFIRM_SECONDS", 600, minimum=0)
# Where customers' key managers may be: KMIP hosts ("*", "kms.example.com", "*.example.com")
# and PKCS#11 libraries (paths) the platform agrees to load. Production allows none by default.
KCM_HYOK_KMIP_ALLOWED_HOSTS = env_list("KCM_HYOK_KMIP_ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
KCM_HYOK_PKCS11_LIBRARIES = env_list(
    "KCM_HYOK_PKCS11_LIBRARIES", [] if PRODUCTION else [KCM_PKCS11_LIBRARY]
)
