"""kcm_client without a server: retries and back-off, the data-key cache's limits, and the
cache dropped on key_disabled. (The live server's behaviour is in test_sdk_e2e.py.)"""

from __future__ import annotations

import time

import httpx
import pytest
from kcm_client import Client, DataKeyCache, errors

from .fakeserver import FakeKcm


def client_over(handler: object, **options: object) -> Client:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return Client("http://kcm.test", "token", transport=transport, **options)  # type: ignore[arg-type]


def test_it_retries_503_and_429_honouring_retry_after() -> None:
    fake = FakeKcm()
    answers = [
        httpx.Response(503, headers={"Retry-After": "0.2"}, json={"code": "hsm_unavailable"}),
        httpx.Response(429, headers={"Retry-After": "0"}, json={"code": "throttled"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else fake.handler(request)

    kcm = client_over(handler)
    started = time.monotonic()
    message = kcm.encrypt(b"hello", service_key="payments")
    assert time.monotonic() - started >= 0.2  # waited as Retry-After said
    assert kcm.server_calls == 3
    assert kcm.decrypt(message) == b"hello"


def test_it_gives_up_after_its_retries_with_the_servers_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "0"}, json={"code": "hsm_unavailable"})

    kcm = client_over(handler, retries=2)
    with pytest.raises(errors.HsmUnavailable):
        kcm.encrypt(b"x", service_key="payments")
    assert kcm.server_calls == 3


def test_it_does_not_retry_a_refusal() -> None:
    fake = FakeKcm()
    fake.refuse = "invalid_token"
    kcm = client_over(fake.handler)
    with pytest.raises(errors.AuthenticationError):
        kcm.encrypt(b"x", service_key="payments")
    assert fake.calls == 1


def test_a_dead_server_is_a_transport_error_not_a_hang() -> None:
    kcm = Client("http://127.0.0.1:9", "token", timeout=2, retries=1)
    with pytest.raises(errors.TransportError):
        kcm.encrypt(b"x", service_key="payments")


def test_without_a_cache_every_message_fetches_a_key() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler)
    for _ in range(5):
        kcm.encrypt(b"x", service_key="payments")
    assert fake.calls == 5


def test_the_cache_reuses_a_key_for_at_most_max_messages() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler, cache=DataKeyCache(max_messages=3))
    envelopes = {kcm.header(kcm.encrypt(b"x", service_key="p")).envelope for _ in range(7)}
    assert fake.calls == 3 and len(envelopes) == 3


def test_the_cache_reuses_a_key_for_at_most_max_bytes() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler, cache=DataKeyCache(max_bytes=100))
    for _ in range(4):
        kcm.encrypt(b"x" * 40, service_key="p")  # 40, 80 | 40, 80
    assert fake.calls == 2


def test_the_cache_reuses_a_key_for_at_most_max_age() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler, cache=DataKeyCache(max_age=0.2))
    kcm.encrypt(b"x", service_key="p")
    kcm.encrypt(b"x", service_key="p")
    time.sleep(0.25)
    kcm.encrypt(b"x", service_key="p")
    assert fake.calls == 2


def test_the_cache_keeps_keys_of_different_contexts_apart() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler, cache=DataKeyCache())
    one = kcm.encrypt(b"x", service_key="p", context={"a": "1"})
    two = kcm.encrypt(b"x", service_key="p", context={"a": "2"})
    assert kcm.header(one).envelope != kcm.header(two).envelope


def test_decrypting_with_a_cache_asks_once_per_envelope() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler, cache=DataKeyCache())
    messages = [kcm.encrypt(b"x", service_key="p") for _ in range(10)]
    reader = client_over(fake.handler, cache=DataKeyCache())
    fake.calls = 0
    assert [reader.decrypt(m) for m in messages] == [b"x"] * 10
    assert fake.calls == 1


@pytest.mark.parametrize("code", ["key_disabled", "key_destroyed", "key_pending_deletion"])
def test_an_unusable_key_answer_drops_every_cached_key(code: str) -> None:
    fake = FakeKcm()
    cache = DataKeyCache()
    kcm = client_over(fake.handler, cache=cache)
    message = kcm.encrypt(b"x", service_key="p")
    kcm.decrypt(message)
    assert len(cache) == 2
    fake.refuse = code
    with pytest.raises(errors.KeyUnusable) as caught:
        kcm.encrypt(b"y", service_key="p", context={"other": "context"})
    assert caught.value.code == code
    assert len(cache) == 0
    with pytest.raises(errors.KeyUnusable):
        kcm.decrypt(message)  # no longer served from the cache


def test_a_given_context_must_be_the_messages() -> None:
    fake = FakeKcm()
    kcm = client_over(fake.handler)
    message = kcm.encrypt(b"x", service_key="p", context={"record": "1"})
    calls = fake.calls
    with pytest.raises(errors.ContextMismatch):
        kcm.decrypt(message, context={"record": "2"})
    assert fake.calls == calls  # refused before asking the server


def test_retry_after_may_be_a_date_or_unreadable() -> None:
    from email.utils import formatdate

    from kcm_client.http import _retry_after

    assert _retry_after("3") == 3.0
    assert 0 < (_retry_after(formatdate(time.time() + 5, usegmt=True)) or 0) <= 5
    assert _retry_after("soon, maybe") is None
    assert _retry_after(None) is None
