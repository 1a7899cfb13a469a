"""Rotation in the console: rotate from the key list, watch the job page, cancel, policies."""

from __future__ import annotations

from typing import Any

from django.test import Client

from apps.core.roles import Role
from apps.rotation.models import RewrapJob

HOST = "acme.localhost"


def _client(world: Any, role: str) -> Client:
    client = Client(HTTP_HOST=HOST)
    client.force_login(world.users[("acme", role)])
    return client


def test_a_key_admin_rotates_from_the_console_and_lands_on_the_job_page(
    make_chain: Any, world: Any
) -> None:
    chain = make_chain(service_keys=2)
    client = _client(world, Role.KEY_ADMIN)
    page = client.get("/rotation/").content.decode()
    assert "L2 of root" in page and "L3 payments" in page and "Rotate" in page
    started = client.post(f"/rotation/keys/{chain.l2_id}/rotate/")
    with chain.inside():
        job = RewrapJob.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/rotation/jobs/{job.pk}/"
    job_page = client.get(started["Location"]).content.decode()
    assert 'data-testid="job-progress"' in job_page and "rotation/job.js" in job_page
    assert f'data-poll-url="/api/v1/rotation/jobs/{job.pk}/"' in job_page
    # The page polls the API with the console session: that works for a reader too.
    assert client.get(f"/api/v1/rotation/jobs/{job.pk}/").json()["state"] == "queued"
    again = client.post(f"/rotation/keys/{chain.l2_id}/rotate/", follow=True)
    assert f"Rotation job {job.pk} of this key is queued" in again.content.decode()
    cancelled = client.post(f"/rotation/jobs/{job.pk}/cancel/", follow=True)
    assert "Job cancelled." in cancelled.content.decode()
    with chain.inside():
        assert RewrapJob.objects.get().state == "cancelled"


def test_readers_see_jobs_but_no_buttons(make_chain: Any, world: Any) -> None:
    chain = make_chain()
    chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {})
    client = _client(world, Role.AUDITOR)
    page = client.get("/rotation/").content.decode()
    assert "tenant key of root" in page and "Rotate</button>" not in page
    assert client.post(f"/rotation/keys/{chain.l2_id}/rotate/").status_code == 403


def test_defaults_and_key_policies_are_set_in_the_console(make_chain: Any, world: Any) -> None:
    chain = make_chain()
    client = _client(world, Role.KEY_ADMIN)
    saved = client.post("/rotation/defaults/", {"level": "L2", "period_days": "30"}, follow=True)
    assert "Default policy for L2 saved." in saved.content.decode()
    refused = client.post("/rotation/defaults/", {"level": "L1", "max_usage": "5"}, follow=True)
    assert "service keys (L3) only" in refused.content.decode()
    own = client.post(f"/rotation/keys/{chain.l2_id}/policy/", {"period_days": "7"}, follow=True)
    assert "Key policy saved." in own.content.decode() and "every 7 d" in own.content.decode()
    api = chain.admin.get(f"/api/v1/rotation/keys/{chain.l2_id}/policy/").json_body
    assert api["own"]["period_days"] == 7 and api["default"]["period_days"] == 30
