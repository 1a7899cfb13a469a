"""Findings 7 and 8 (issue 11): nobody attaches another tenant's user by username (or sees
their email), and a new tenant gets its first administrator through a one-time, expiring
invitation link. Links work once, on their own tenant's host only, until they expire or are
revoked; every way a link fails answers alike; nobody invites to a role they do not hold; a
platform operator bootstraps only a tenant that has no administrator."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.tenants import invitations
from apps.tenants.access import digest_secret
from apps.tenants.models import Invitation, Membership, Tenant
from apps.tenants.tokens import api_token_create, api_token_revoke
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem, host_of

NEW_PASSWORD = "a long and fresh passphrase 77"
LINK = re.compile(r"^http://(?P<host>[a-z0-9.-]+)/invitations/(?P<secret>[A-Za-z0-9_-]{43})/$")


def _invite(api: Any, slug: str, role: str, roles: list[str], **body: Any) -> Any:
    return api(slug, role).post("/api/v1/invitations/", {"roles": roles, **body})


def _secret(answer: Any) -> str:
    assert answer.status_code == 201, answer.content[:300]
    found = LINK.match(answer.json_body["link"])
    assert found, answer.json_body["link"]
    return found["secret"]


def _sign_up(host: str, secret: str, username: str, client: Client | None = None) -> Any:
    return (client or Client()).post(
        f"/invitations/{secret}/",
        {
            "how": "sign-up",
            "new_username": username,
            "email": f"{username}@example.org",
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
        HTTP_HOST=host,
    )


def _roles(username: str, slug: str) -> list[str] | None:
    member = Membership.objects.filter(user__username=username, tenant__slug=slug).first()
    return None if member is None else sorted(member.roles)


# --- finding 7: no attaching by username, no other tenant's data ----------------------------


def test_member_add_cannot_attach_another_tenants_user_or_show_their_email(
    api: Any, world: World
) -> None:
    outsider = world.users[("globex", Role.AUDITOR)]
    User.objects.filter(pk=outsider.pk).update(email="secret@globex.example")
    admin = api("acme", Role.TENANT_ADMIN)
    answer = admin.post("/api/v1/members/", {"username": outsider.username, "role": "auditor"})
    assert answer.status_code == 405, answer.content[:300]
    assert b"secret@globex.example" not in answer.content
    # The console's members page has no add-by-username form either.
    client = Client()
    client.force_login(world.users[("acme", Role.TENANT_ADMIN)])
    page = client.post(
        "/members/", {"username": outsider.username, "role": "auditor"}, HTTP_HOST="acme.localhost"
    )
    assert page.status_code in (200, 405)
    assert b"secret@globex.example" not in page.content
    assert not Membership.objects.filter(user=outsider, tenant=world.tenants["acme"]).exists()
    # The members list names acme's members only.
    listed = admin.get("/api/v1/members/?page_size=200").json_body["results"]
    assert {m["username"] for m in listed} == {f"acme-{role}" for role in map(str, Role)} - {
        "acme-platform_operator"
    }
    assert "secret@globex.example" not in str(listed)


def test_a_username_that_exists_elsewhere_is_not_revealed_by_sign_up(
    api: Any, world: World
) -> None:
    """Only someone holding a valid link can try usernames, and a taken one says only that."""
    secret = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))
    taken = _sign_up("acme.localhost", secret, "globex-auditor")
    assert taken.status_code == 400
    assert b"That username is not available; choose another." in taken.content
    assert b"exists" not in taken.content
    assert b"globex" not in taken.content.replace(b"globex-auditor", b"")
    assert _roles("globex-auditor", "acme") is None


# --- finding 8: a new tenant's first administrator ------------------------------------------


def test_a_platform_operator_invites_a_new_tenants_first_admin_who_then_signs_in(
    api: Any, world: World
) -> None:
    operator = api("platform", Role.PLATFORM_OPERATOR)
    assert operator.post("/api/v1/platform/tenants/", {"slug": "newco"}).status_code == 201
    made = operator.post(
        "/api/v1/platform/tenants/newco/invitations/",
        {"roles": ["tenant_admin", "key_admin"], "email": "cto@newco.example"},
    )
    secret = _secret(made)
    assert LINK.match(made.json_body["link"])["host"] == "newco.localhost"  # type: ignore[index]
    assert made.json_body["email"] == "cto@newco.example"

    opened = Client().get(f"/invitations/{secret}/", HTTP_HOST="newco.localhost")
    assert opened.status_code == 200
    assert b"key_admin, tenant_admin" in opened.content
    assert b"cto@newco.example" not in opened.content  # the note is for the inviter only

    client = Client()
    joined = _sign_up("newco.localhost", secret, "newco-cto", client)
    assert (joined.status_code, joined["Location"]) == (302, "/")
    assert _roles("newco-cto", "newco") == ["key_admin", "tenant_admin"]
    assert client.get("/members/", HTTP_HOST="newco.localhost").status_code == 200
    fresh = Client()
    assert (
        fresh.post(
            "/login/",
            {"username": "newco-cto", "password": NEW_PASSWORD},
            HTTP_HOST="newco.localhost",
        ).status_code
        == 302
    )
    # Now newco has an administrator: the operator's bootstrap is over.
    assert_problem(
        operator.post("/api/v1/platform/tenants/newco/invitations/", {"roles": ["tenant_admin"]}),
        403,
        "role_not_held",
    )


def test_the_operator_bootstrap_is_refused_for_a_tenant_that_has_an_admin(
    api: Any, world: World
) -> None:
    assert_problem(
        api("platform", Role.PLATFORM_OPERATOR).post(
            "/api/v1/platform/tenants/acme/invitations/", {"roles": ["tenant_admin"]}
        ),
        403,
        "role_not_held",
    )
    assert not Invitation.objects.filter(tenant=world.tenants["acme"]).exists()


def test_the_command_line_invites_a_first_admin_and_nothing_more(world: World) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    call_command("kcm_tenant", "create", "cmdco", stdout=StringIO())
    out = StringIO()
    call_command("kcm_tenant", "invite", "cmdco", "--roles", "tenant_admin,auditor", stdout=out)
    link = out.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"http://cmdco\.localhost:\d+/invitations/[A-Za-z0-9_-]{43}/", link), link
    invitation = Invitation.objects.get(tenant__slug="cmdco")
    assert invitation.roles == ["auditor", "tenant_admin"]
    try:
        call_command("kcm_tenant", "invite", "acme", stdout=StringIO())
    except CommandError as exc:
        assert "role_not_held" in str(exc)
    else:
        raise AssertionError("the command bootstrapped a tenant that has an admin")


# --- the link: own tenant only, once, until expiry or revocation, failing alike --------------


def test_a_link_works_on_its_own_tenants_host_only(api: Any, world: World) -> None:
    secret = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))
    assert Client().get(f"/invitations/{secret}/", HTTP_HOST="globex.localhost").status_code == 404
    assert _sign_up("globex.localhost", secret, "hopper").status_code == 404
    assert Client().get(f"/invitations/{secret}/", HTTP_HOST="localhost").status_code == 404
    assert not User.objects.filter(username="hopper").exists()
    # Services look a secret up in the tenant they are given, never across tenants.
    stranger = world.users[("globex", Role.AUDITOR)]
    try:
        invitations.invitation_accept(tenant=world.tenants["globex"], secret=secret, user=stranger)
    except invitations.InvitationInvalid:
        pass
    else:
        raise AssertionError("accepted on another tenant")
    assert _sign_up("acme.localhost", secret, "hopper").status_code == 302
    assert _roles("hopper", "acme") == ["tenant_admin"] and _roles("hopper", "globex") is None


def test_a_link_works_once(api: Any, world: World) -> None:
    secret = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))
    assert _sign_up("acme.localhost", secret, "first").status_code == 302
    again = Client().post(
        f"/invitations/{secret}/",
        {"how": "sign-in", "username": "globex-auditor", "password": PASSWORD},
        HTTP_HOST="acme.localhost",
    )
    assert again.status_code == 404 and b"not valid" in again.content
    assert _roles("globex-auditor", "acme") is None
    invitation = Invitation.objects.get(digest=digest_secret(secret))
    assert invitation.accepted_by == User.objects.get(username="first")


def test_an_expired_or_revoked_link_fails_exactly_like_an_unknown_one(
    api: Any, world: World, settings: Any
) -> None:
    admin = api("acme", Role.TENANT_ADMIN)
    expired, revoked, used = (
        _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"])) for _ in range(3)
    )
    Invitation.objects.filter(digest=digest_secret(expired)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    revoked_id = Invitation.objects.get(digest=digest_secret(revoked)).pk
    assert admin.call("DELETE", f"/api/v1/invitations/{revoked_id}/").status_code == 204
    assert _sign_up("acme.localhost", used, "user-once").status_code == 302
    answers = [
        Client().get(f"/invitations/{secret}/", HTTP_HOST="acme.localhost")
        for secret in (expired, revoked, used, "x" * 43)
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.content for a in answers}) == 1
    for secret in (expired, revoked):
        assert _sign_up("acme.localhost", secret, "too-late").status_code == 404
    assert not User.objects.filter(username="too-late").exists()
    # The lifetime comes from KCM_INVITATION_TTL_HOURS.
    settings.KCM_INVITATION_TTL_HOURS = 2
    latest = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))
    made = Invitation.objects.get(digest=digest_secret(latest))
    assert timedelta(hours=1, minutes=59) < made.expires_at - made.created_at <= timedelta(hours=2)


def test_a_removed_inviter_cannot_come_back_through_a_link_sent_before(
    api: Any, world: World
) -> None:
    """An admin about to be removed sends themselves a link: once they are out (or lose the
    roles offered), their pending links are dead too."""
    inviter = world.users[("acme", Role.KEY_ADMIN)]
    kept = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))
    mine = _secret(_invite(api, "acme", Role.KEY_ADMIN, ["key_admin"]))  # token of key_admin
    assert Invitation.objects.get(digest=digest_secret(mine)).created_by == inviter
    Membership.objects.filter(user=inviter, tenant=world.tenants["acme"]).delete()
    assert Client().get(f"/invitations/{mine}/", HTTP_HOST="acme.localhost").status_code == 404
    try:
        invitations.invitation_accept(tenant=world.tenants["acme"], secret=mine, user=inviter)
    except invitations.InvitationInvalid:
        pass
    else:
        raise AssertionError("a removed member came back through their own link")
    assert _roles(inviter.username, "acme") is None
    # Other inviters' links are untouched.
    assert _sign_up("acme.localhost", kept, "still-welcome").status_code == 302


def test_a_link_sent_by_a_token_dies_with_the_token(api: Any, world: World) -> None:
    """A leaked or short-lived token cannot leave a way in behind it: a link it made expires
    no later than it does, and revoking the token kills every link it sent that is still
    unused (as it revokes the tokens it made)."""
    tenant = world.tenants["acme"]
    admin = world.users[("acme", Role.TENANT_ADMIN)]
    short, short_token = api_token_create(
        tenant=tenant,
        name="provisioning",
        role=Role.TENANT_ADMIN,
        created_by_id=admin.pk,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    sender = Api(host_of("acme"), short_token)
    first = _secret(sender.post("/api/v1/invitations/", {"roles": ["tenant_admin"]}))
    second = _secret(sender.post("/api/v1/invitations/", {"roles": ["tenant_admin"]}))
    made = Invitation.objects.get(digest=digest_secret(first))
    assert short.expires_at is not None and made.expires_at <= short.expires_at
    # A link another token sent is untouched by the revocation.
    by_hand = _secret(_invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]))

    assert _sign_up("acme.localhost", first, "joined-in-time").status_code == 302
    api_token_revoke(tenant=tenant, token_id=short.pk)
    assert Client().get(f"/invitations/{second}/", HTTP_HOST="acme.localhost").status_code == 404
    assert _sign_up("acme.localhost", second, "too-late").status_code == 404
    assert _roles("too-late", "acme") is None
    assert not User.objects.filter(username="too-late").exists()
    # What was accepted before stays.
    assert _roles("joined-in-time", "acme") == ["tenant_admin"]
    assert _sign_up("acme.localhost", by_hand, "still-welcome").status_code == 302


def test_nobody_invites_to_a_role_they_do_not_hold(api: Any, world: World) -> None:
    assert_problem(_invite(api, "acme", Role.KEY_ADMIN, ["tenant_admin"]), 403, "role_not_held")
    assert_problem(_invite(api, "acme", Role.TENANT_ADMIN, ["key_user"]), 403, "role_not_held")
    assert_problem(
        _invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin", "auditor"]), 403, "role_not_held"
    )
    # A key admin may bring in another key admin; a tenant admin another tenant admin.
    assert _invite(api, "acme", Role.KEY_ADMIN, ["key_admin"]).status_code == 201
    assert _invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"]).status_code == 201
    assert Invitation.objects.filter(tenant=world.tenants["acme"]).count() == 2


def test_a_key_user_invites_a_key_user_within_its_own_grant_only(api: Any, world: World) -> None:
    narrow = _invite(
        api, "acme", Role.KEY_USER, ["key_user"], key_grant={"service_keys": ["payments"]}
    )
    assert narrow.status_code == 201, narrow.content
    assert narrow.json_body["key_grant"] == {"service_keys": ["payments"], "context": {}}
    # No grant given: the invitee gets the inviter's own (here every key), never more.
    default = _invite(api, "acme", Role.KEY_USER, ["key_user"])
    assert default.json_body["key_grant"] == {"service_keys": ["*"], "context": {}}
    assert_problem(
        _invite(api, "acme", Role.KEY_ADMIN, ["key_admin"], key_grant={"service_keys": ["*"]}),
        400,
        "invalid_grant",
    )


def test_the_link_is_shown_once_and_never_stored_or_audited(api: Any, world: World) -> None:
    made = _invite(api, "acme", Role.TENANT_ADMIN, ["tenant_admin"], email="new@acme.example")
    secret = _secret(made)
    listed = api("acme", Role.TENANT_ADMIN).get("/api/v1/invitations/").json_body["results"]
    assert [i["id"] for i in listed] == [made.json_body["id"]]
    assert "link" not in listed[0] and secret not in str(listed)
    row = Invitation.objects.filter(pk=made.json_body["id"]).values().get()
    assert secret not in str(row) and row["digest"] == digest_secret(secret)
    assert _sign_up("acme.localhost", secret, "audited").status_code == 302
    with schema_context("t_acme"):
        seal_here()
        events = list(AuditEvent.objects.filter(action__startswith="invitation.").order_by("seq"))
    assert [e.action for e in events][-2:] == ["invitation.create", "invitation.accept"]
    assert events[-1].actor == "user:audited"
    assert all(secret not in repr(e.__dict__) for e in events)


# --- concurrency: of two accepts at once, exactly one wins -----------------------------------


def test_of_two_concurrent_accepts_exactly_one_wins(world: World) -> None:
    """Committed rows and separate connections: both accepts wait on a lock held on the
    invitation, then race when it is released. Without the row lock both would join."""
    acme = world.tenants["acme"]
    secret = "concurrent-" + "c" * 32
    names = ("racer-1", "racer-2")
    outcomes: dict[str, str] = {}

    def in_thread(work: Any) -> Any:
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(work())
            except BaseException as exc:  # reported below
                box.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread, box

    def setup() -> int:
        for name in names:
            User.objects.create_user(username=name, password=NEW_PASSWORD)
        return Invitation.objects.create(
            tenant=acme,
            roles=["tenant_admin"],
            created_by=world.users[("acme", Role.TENANT_ADMIN)],
            digest=digest_secret(secret),
            expires_at=timezone.now() + timedelta(hours=1),
        ).pk

    def accept(name: str) -> None:
        with tenant_context(Tenant.objects.get(pk=acme.pk)):
            user = User.objects.get(username=name)
            try:
                invitations.invitation_accept(tenant=acme, secret=secret, user=user)
                outcomes[name] = "joined"
            except KcmError as exc:
                outcomes[name] = exc.code

    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        from django.db import transaction

        with transaction.atomic():
            Invitation.objects.select_for_update().get(digest=digest_secret(secret))
            holding.set()
            release.wait(20)

    thread, box = in_thread(setup)
    thread.join()
    assert isinstance(box[0], int), box
    try:
        holder, _ = in_thread(hold)
        assert holding.wait(10)
        racers = [in_thread(lambda n=name: accept(n))[0] for name in names]
        deadline = time.monotonic() + 10
        while _lock_waiters() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lock_waiters() >= 2, "both accepts should wait on the invitation's lock"
        release.set()
        holder.join()
        for racer in racers:
            racer.join()
        assert sorted(outcomes.values()) == ["invitation_invalid", "joined"], outcomes
        joined = in_thread(
            lambda: Membership.objects.filter(tenant=acme, user__username__in=names).count()
        )
        joined[0].join()
        assert joined[1] == [1]
    finally:
        release.set()
        cleanup = in_thread(
            lambda: (
                Invitation.objects.filter(digest=digest_secret(secret)).delete(),
                User.objects.filter(username__in=names).delete(),
            )
        )
        cleanup[0].join()


def _lock_waiters() -> int:
    # pg_locks is live; pg_stat_activity would be a snapshot taken once per transaction.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")
        return int(cursor.fetchone()[0])


def test_a_link_offering_more_than_its_inviters_grant_now_holds_is_dead(
    api: Any, world: World
) -> None:
    """A key user invites with its grant of every key; an admin then narrows that grant to
    'payments': the link, which still offers every key, no longer works."""
    wide = _secret(_invite(api, "acme", Role.KEY_USER, ["key_user"]))
    narrow = _secret(
        _invite(api, "acme", Role.KEY_USER, ["key_user"], key_grant={"service_keys": ["payments"]})
    )
    inviter = Membership.objects.get(
        user=world.users[("acme", Role.KEY_USER)], tenant=world.tenants["acme"]
    )
    inviter.key_grant = {"service_keys": ["payments"], "context": {}}
    inviter.save(update_fields=["key_grant"])
    assert Client().get(f"/invitations/{wide}/", HTTP_HOST="acme.localhost").status_code == 404
    assert _sign_up("acme.localhost", wide, "too-wide").status_code == 404
    assert _roles("too-wide", "acme") is None
    assert _sign_up("acme.localhost", narrow, "just-right").status_code == 302
    assert _roles("just-right", "acme") == ["key_user"]


def test_a_spare_first_admin_link_dies_when_the_first_admin_joins(api: Any, world: World) -> None:
    """An operator makes two first-admin links and keeps one: once the customer's admin has
    joined, the spare no longer works, so the operator cannot join later with it; and nobody
    accepts their own invitation."""
    operator = api("platform", Role.PLATFORM_OPERATOR)
    assert operator.post("/api/v1/platform/tenants/", {"slug": "spareco"}).status_code == 201
    base = "/api/v1/platform/tenants/spareco/invitations/"
    sent = _secret(operator.post(base, {"roles": ["tenant_admin", "key_user"]}))
    kept = _secret(operator.post(base, {"roles": ["tenant_admin", "key_user"]}))
    own = invitations.invitation_accept
    operator_user = world.users[("platform", Role.PLATFORM_OPERATOR)]
    spareco = Tenant.objects.get(slug="spareco")
    try:
        own(tenant=spareco, secret=kept, user=operator_user)
    except KcmError as exc:
        assert exc.code == "own_invitation"
    else:
        raise AssertionError("an operator accepted their own invitation")
    assert _sign_up("spareco.localhost", sent, "spareco-admin").status_code == 302
    assert Client().get(f"/invitations/{kept}/", HTTP_HOST="spareco.localhost").status_code == 404
    assert _sign_up("spareco.localhost", kept, "operators-friend").status_code == 404
    assert _roles("operators-friend", "spareco") is None
