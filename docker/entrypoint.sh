#!/bin/sh
# KCM container entry point:  web | worker | beat | migrate | any other command.
# Configuration comes from KCM_* environment variables (see docker/compose.yaml).
set -eu

# Evaluation only: create the bundled SoftHSM2's token on first start, in the volume.
# A real HSM's token is provisioned by its owner, never by the application.
init_softhsm_token() {
    [ "${KCM_PKCS11_LIBRARY:-/usr/lib/softhsm/libsofthsm2.so}" = /usr/lib/softhsm/libsofthsm2.so ] || return 0
    label="${KCM_PKCS11_TOKEN_LABEL:-kcm}"
    if softhsm2-util --show-slots | grep -Eq "Label:[[:space:]]+${label}[[:space:]]*$"; then
        return 0
    fi
    if [ -n "${KCM_PKCS11_PIN_FILE:-}" ]; then pin="$(cat "$KCM_PKCS11_PIN_FILE")"; else pin="${KCM_PKCS11_PIN:?set KCM_PKCS11_PIN_FILE}"; fi
    # The SO PIN only resets a lost user PIN; for an evaluation token we do not keep it.
    so_pin="$(python -c 'import secrets; print(secrets.token_hex(16))')"
    echo "entrypoint: initialising SoftHSM2 token '$label'"
    softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
}

case "${1:-web}" in
    migrate)
        # Runs once before the long-running services (compose: service_completed_successfully),
        # so the token is never initialised by two containers at once.
        init_softhsm_token
        exec python manage.py kcm_migrate
        ;;
    web)
        # granian or gunicorn (KCM_WEB_SERVER), workers (KCM_WEB_WORKERS), threads
        # (KCM_WEB_THREADS), no preloading: kms_project/web.py.
        exec python -m kms_project.web --bind "0.0.0.0:${KCM_PORT:-8000}"
        ;;
    worker)
        exec celery -A kms_project worker -l info --concurrency 2
        ;;
    beat)
        # --quiet: no start-up banner, which is printed, not logged (JSON lines only).
        exec celery -A kms_project --quiet beat -l info
        ;;
    *)
        exec "$@"
        ;;
esac
