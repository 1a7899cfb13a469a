"""The container files agree with the code: services, configuration names, no --preload.

No Docker engine is needed: these read the files. A KCM_* name the code does not read would
be silently ignored in a deployment, which is the failure these tests exist to catch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
KCM_SERVICES = ("migrate", "web", "worker", "beat")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _names_read_by_code() -> set[str]:
    """KCM_* names that the settings modules, the web server's launcher or the local stack
    (tools/devstack.py and tools/kcmstack/) read (as string literals)."""
    names: set[str] = set()
    sources = (
        "kms_project/gunicorn_conf.py",
        "kms_project/granian_serve.py",
        "kms_project/web.py",
        "tools/devstack.py",
    )
    settings = sorted((REPO / "kms_project").glob("settings*.py"))
    stack = sorted((REPO / "tools" / "kcmstack").glob("*.py"))
    for source in (*settings, *(REPO / name for name in sources), *stack):
        text = source.read_text()
        names |= set(re.findall(r"[\"'](KCM_[A-Z0-9_]+)[\"']", text))
        # env_secret("NAME") also reads NAME_FILE.
        names |= {f"{n}_FILE" for n in re.findall(r"env_secret\(\s*\"(KCM_[A-Z0-9_]+)\"", text)}
    return names


def test_compose_defines_the_stack() -> None:
    services = _compose()["services"]

    assert set(services) >= {"postgres", "redis", *KCM_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:18")
    assert "postgres-data:/var/lib/postgresql" in services["postgres"]["volumes"]
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_every_kcm_process_gets_the_same_production_environment() -> None:
    services = _compose()["services"]
    environments = [services[name]["environment"] for name in KCM_SERVICES]

    assert all(env == environments[0] for env in environments)
    env = environments[0]
    assert env["KCM_ENV"] == "production"
    assert env["KCM_DATABASE_URL"].startswith("postgres://")
    assert env["KCM_BROKER_URL"] == "redis://redis:6379/0"
    assert {"KCM_BASE_DOMAIN", "KCM_BEHIND_TLS_PROXY"} <= set(env)
    # Secrets come from compose secrets, never from inline values.
    assert env["KCM_SECRET_KEY_FILE"].startswith("/run/secrets/")
    assert env["KCM_PKCS11_PIN_FILE"].startswith("/run/secrets/")
    assert "KCM_SECRET_KEY" not in env and "KCM_PKCS11_PIN" not in env
    for name in KCM_SERVICES:
        assert set(services[name]["secrets"]) <= set(_compose()["secrets"])


def test_every_kcm_name_in_the_container_files_is_read_by_the_code() -> None:
    known = _names_read_by_code()
    assert {"KCM_DATABASE_URL", "KCM_SECRET_KEY_FILE", "KCM_PORT"} <= known  # sanity

    for file in ("compose.yaml", "Dockerfile", "entrypoint.sh"):
        used = set(re.findall(r"KCM_[A-Z0-9_]+", (DOCKER / file).read_text()))
        assert used - known == set(), f"{file} uses names nothing reads"


def test_every_launcher_starts_the_web_server_one_way_which_never_preloads() -> None:
    # PKCS#11 must be initialised in each worker after fork; --preload would do it before.
    from kms_project import granian_serve, gunicorn_conf

    # granian loads the application through a factory that runs in each worker.
    assert granian_serve.WSGI_FACTORY == "kms_project.granian_serve:worker_application"
    assert gunicorn_conf.preload_app is False
    assert gunicorn_conf.worker_class == "gthread" and gunicorn_conf.threads >= 1
    assert gunicorn_conf.wsgi_app == "kms_project.wsgi:application"
    launchers = (
        DOCKER / "entrypoint.sh",
        REPO / "tools" / "kcmstack" / "processes.py",  # devstack's `run`
        REPO / "tests" / "e2e" / "stack.py",
    )
    for file in (*launchers, DOCKER / "compose.yaml", DOCKER / "Dockerfile"):
        lines = file.read_text().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        assert "--preload" not in code and "preload_app" not in code, file
    for file in launchers:
        assert "kms_project.web" in file.read_text(), file
    # kms_project/web.py is the one place that names gunicorn's settings.
    assert "python:kms_project.gunicorn_conf" in (REPO / "kms_project" / "web.py").read_text()


def test_web_and_worker_share_the_audit_export_folder() -> None:
    # The worker writes exports and archives under KCM_STATE_DIR/audit-exports; web serves them.
    services = _compose()["services"]
    state = re.search(r"KCM_STATE_DIR=(\S+)", (DOCKER / "Dockerfile").read_text())
    assert state is not None
    mount = f"{state.group(1)}/audit-exports"
    for name in ("web", "worker"):
        volumes = services[name]["volumes"]
        assert f"audit-exports:{mount}" in volumes, (name, volumes)
    assert "audit-exports" in _compose()["volumes"]
