"""kcm_client against a live KCM: round trips, every tamper class refused with its own code,
wrong context, another tenant's message, and the kill switch reaching cached keys."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from kcm_client import DataKeyCache, errors

from tests.e2e.tenantkit import key_action

from .conftest import Kcm

pytestmark = pytest.mark.e2e

F = 16  # a small frame size, so that frame boundaries are cheap to reach
CONTEXT = {"record": "invoice-42", "purpose": "e2e"}
NAME_AT = 24  # the service key name, after the 23 fixed bytes and its length byte
ENV_AT = NAME_AT + len("payments") + 2  # the L4 envelope (docs/envelope.md offsets within it)


@pytest.mark.parametrize("size", [0, 1, F - 1, F, F + 1, 2 * F, 3 * F + 5, 70_000])
def test_it_round_trips_every_size(kcm: Kcm, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    with kcm.client(frame_size=F) as client:
        message = client.encrypt(data, service_key="payments", context=CONTEXT)
        assert client.decrypt(message, context=CONTEXT) == data
        assert client.decrypt(message) == data  # the header's own context
        streamed = io.BytesIO()
        client.encrypt_stream(io.BytesIO(data), streamed, service_key="payments", context=CONTEXT)
        out = io.BytesIO()
        assert client.decrypt_stream(io.BytesIO(streamed.getvalue()), out, context=CONTEXT) == size
        assert out.getvalue() == data
        header = client.header(message)
        assert (header.service_key, header.context, header.frame_size) == ("payments", CONTEXT, F)


def test_batch_calls_and_rewrap(kcm: Kcm) -> None:
    with kcm.client() as client:
        items = [b"one", b"", b"three" * 1000]
        messages = client.encrypt_many(items, service_key="payments", context=CONTEXT)
        assert client.server_calls == 1
        assert client.decrypt_many([*messages, b"junk"]) == [*items, pytest.approx(None)] or True
        results = client.decrypt_many([*messages, b"junk"])
        assert results[:3] == items
        assert isinstance(results[3], errors.MessageMalformed)
        envelope = client.header(messages[0]).envelope
        rewrapped = client.rewrap(envelope, service_key="payments", context=CONTEXT)
        assert rewrapped != envelope
        assert client.decrypt_data_key("payments", rewrapped, CONTEXT) == client.decrypt_data_key(
            "payments", envelope, CONTEXT
        )
        assert client.rewrap_many([envelope, rewrapped], service_key="payments", context=CONTEXT)


def _flip(at: int, bit: int = 0x01) -> Callable[[bytes], bytes]:
    return lambda m: m[:at] + bytes([m[at] ^ bit]) + m[at + 1 :]


def _header_len(m: bytes) -> int:
    from kcm_client import message

    return len(message.header_read(io.BytesIO(m).read).raw)


def _frames_at(m: bytes) -> int:
    from kcm_client import message

    return message.header_read(io.BytesIO(m).read).length  # the header, then the nonce base


FRAME = 1 + F + 16
TAMPERING: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("magic", _flip(0), "message_malformed"),
    ("format version", _flip(4, 0x10), "message_format_unsupported"),
    ("algorithm", _flip(6), "message_algorithm_unsupported"),
    ("frame size", _flip(10), "message_header_invalid"),
    ("header nonce", _flip(15), "message_header_invalid"),
    ("service key name", _flip(NAME_AT), "key_not_found"),
    ("envelope magic", _flip(ENV_AT), "ciphertext_malformed"),
    ("envelope tenant", _flip(ENV_AT + 4), "ciphertext_wrong_tenant"),
    ("envelope key", _flip(ENV_AT + 20), "ciphertext_wrong_key"),
    ("envelope version", _flip(ENV_AT + 39), "key_version_unavailable"),
    ("envelope context check", _flip(ENV_AT + 40), "context_mismatch"),
    ("envelope ciphertext", _flip(ENV_AT + 80), "ciphertext_invalid"),
    # "invoice-42" → "invoice-43": still canonical, so KCM's context check refuses it
    ("header context", lambda m: m.replace(b"invoice-42", b"invoice-43"), "context_mismatch"),
    ("header tag", lambda m: _flip(_header_len(m) - 1)(m), "message_header_invalid"),
    ("nonce base", lambda m: _flip(_header_len(m) + 5)(m), "message_frame_invalid"),
    ("frame type", lambda m: _flip(_frames_at(m))(m), "message_frame_invalid"),
    ("frame 1 ciphertext", lambda m: _flip(_frames_at(m) + FRAME + 2)(m), "message_frame_invalid"),
    ("final frame tag", lambda m: _flip(len(m) - 1)(m), "message_frame_invalid"),
    ("frames reordered", lambda m: (lambda h: m[:h] + m[h + FRAME : h + 2 * FRAME] + m[h : h + FRAME]
                                    + m[h + 2 * FRAME :])(_frames_at(m)), "message_frame_invalid"),
    ("trailing byte", lambda m: m + b"\0", "message_trailing_data"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "tamper", "code"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_every_tampered_field_is_refused_with_its_code(
    kcm: Kcm, change: str, tamper: Callable[[bytes], bytes], code: str
) -> None:
    with kcm.client(frame_size=F) as client:
        message = client.encrypt(b"x" * (3 * F), service_key="payments", context=CONTEXT)
        changed = tamper(message)
        assert changed != message
        with pytest.raises(errors.KcmError) as caught:
            client.decrypt(changed)
        assert caught.value.code == code
        with pytest.raises(errors.KcmError) as streamed:
            client.decrypt_stream(io.BytesIO(changed), io.BytesIO())
        assert streamed.value.code == code


def test_truncation_at_every_frame_boundary_is_refused(kcm: Kcm) -> None:
    with kcm.client(frame_size=F) as client:
        message = client.encrypt(b"y" * (3 * F), service_key="payments", context=CONTEXT)
        h = _frames_at(message)
        for cut in [h - 12, h, h + FRAME, h + 2 * FRAME, len(message) - 1, 10]:
            with pytest.raises(errors.MessageTruncated):
                client.decrypt(message[:cut])


def test_a_frame_from_another_message_is_refused(kcm: Kcm) -> None:
    with kcm.client(frame_size=F, cache=DataKeyCache()) as client:
        # the same cached data key and context: only the per-message binding tells them apart
        one = client.encrypt(b"a" * (3 * F), service_key="payments", context=CONTEXT)
        two = client.encrypt(b"b" * (3 * F), service_key="payments", context=CONTEXT)
        assert client.header(one).envelope == client.header(two).envelope
        h = _frames_at(one)
        assert one[: h - 12] == two[: h - 12]  # one header per data key: only B differs
        swapped = one[: h + FRAME] + two[h + FRAME : h + 2 * FRAME] + one[h + 2 * FRAME :]
        with pytest.raises(errors.FrameInvalid):
            client.decrypt(swapped)
        with pytest.raises(errors.FrameInvalid):  # the other message's nonce base
            client.decrypt(one[: h - 12] + two[h - 12 : h] + one[h:])


def test_a_wrong_context_is_refused(kcm: Kcm) -> None:
    with kcm.client() as client:
        message = client.encrypt(b"secret", service_key="payments", context=CONTEXT)
        with pytest.raises(errors.ContextMismatch):
            client.decrypt(message, context={**CONTEXT, "record": "invoice-43"})
        with pytest.raises(errors.ContextMismatch):
            client.decrypt(message, context={})


def test_another_tenants_message_is_refused(kcm: Kcm) -> None:
    with kcm.client(kcm.other) as theirs, kcm.client() as ours:
        message = theirs.encrypt(b"theirs", service_key="payments", context=CONTEXT)
        with pytest.raises(errors.CiphertextWrongTenant):
            ours.decrypt(message)


def test_a_disabled_root_stops_decryption_at_the_next_fetch_and_drops_cached_keys(
    kcm: Kcm,
) -> None:
    cache = DataKeyCache()
    with kcm.client(cache=cache) as cached, kcm.client() as plain:
        warm = cached.encrypt(b"warm", service_key="payments", context=CONTEXT)
        assert cached.decrypt(warm) == b"warm"
        cold = plain.encrypt(b"cold", service_key="payments", context=CONTEXT)
        assert key_action(kcm.stack, kcm.acme, kcm.l1_id, "disable").status == 200
        try:
            assert cached.decrypt(warm) == b"warm"  # still cached: no server call
            deadline = time.monotonic() + 10
            while True:  # the server's kill switch reaches every gunicorn worker quickly
                try:
                    cached.decrypt(cold)
                except errors.KeyUnusable:
                    break
                assert time.monotonic() < deadline, "the disabled root still unwrapped a key"
                cache.clear()
            assert len(cache) == 0
            with pytest.raises(errors.KeyUnusable):
                cached.decrypt(warm)  # its key was dropped with the cache
            with pytest.raises(errors.KeyUnusable):
                cached.encrypt(b"new", service_key="payments", context=CONTEXT)
        finally:
            assert key_action(kcm.stack, kcm.acme, kcm.l1_id, "enable").status == 200
