"""Kill-switch latency: from the response to "disable the root key (L1)" to each process's
first refusal, over both gunicorn workers and a Celery worker, each with a warm key cache.

    python -m bench.killswitch          # BENCH_TRIALS (default 100)

(With fewer than 100 trials, the nearest-rank p99 is the slowest trial.)

Per trial: enable the L1; warm up until every gunicorn worker has served a decrypt and the
Celery worker has run a probe task successfully; disable the L1; then, from the moment its
response arrives, poll with concurrent decrypt requests (and probe tasks) until every process
has refused once. A trial's figure is the slowest process. The Celery worker runs KCM's app
with the filesystem broker polled every 5 ms (bench.celery_fastpoll): with the default 1 s
poll the figure would time the broker, not the revocation.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from bench.common import (
    SERVICE,
    Deployment,
    HttpClient,
    deployment,
    percentile,
    report,
    spread_clients,
)
from tests.e2e.tenantkit import CONTEXT, KEY_USER, WorkerProbe, key_action, web_worker_pids

TRIALS = int(os.environ.get("BENCH_TRIALS", "100"))
POLLERS = 4  # concurrent HTTP pollers: enough to keep both gunicorn workers busy
GIVE_UP_SECONDS = 10.0
RESEND_SECONDS = 0.5
CELERY = "celery"


@dataclass
class Trial:
    first_refusal_ms: dict[str, float] = field(default_factory=dict)  # process -> ms
    late_successes: int = 0  # requests or tasks sent after the disable response that worked
    unexpected: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.pids = web_worker_pids(dep.stack)
        # Spread over the workers: each connection stays with the worker that accepted it, and
        # four left to the kernel all land on one worker about one time in eight, which then
        # never warms up (nor is measured).
        self.clients = spread_clients(
            dep.stack, dep.tenant.host, dep.tenant.tokens[KEY_USER], POLLERS
        )
        self.probe = WorkerProbe(dep.stack, poll=0.002)
        self.ciphertext = self._data_key()
        self.decrypt_body = {"ciphertext": self.ciphertext, "context": CONTEXT}
        self.processes = [f"web:{pid}" for pid in sorted(self.pids)] + [CELERY]
        self.resent = 0

    def _data_key(self) -> str:
        status, _, body = self.clients[0].post_json(
            f"{SERVICE}/generate-data-key/", {"context": CONTEXT}
        )
        assert status == 200, body
        return str(body["ciphertext"])

    def decrypt(self, client: HttpClient) -> tuple[int, int, str | None]:
        status, pid, body = client.post_json(f"{SERVICE}/decrypt-data-key/", self.decrypt_body)
        return status, pid, body.get("code") if status != 200 else None

    def celery_ok(self) -> bool:
        """Whether a probe task decrypted in the worker. A probe unanswered after
        RESEND_SECONDS is sent again and counted (`resent`); none is expected, since the
        probe client publishes atomically (see kms_project.broker)."""
        pending = [self.probe.send(self.dep.tenant, self.ciphertext)]
        resend_at = time.monotonic() + RESEND_SECONDS
        give_up = time.monotonic() + GIVE_UP_SECONDS
        while True:
            for result in pending:
                if result.ready():
                    return bool(result.get() == {"ok": True})
            worker = self.dep.stack.procs["worker"]
            if worker.poll() is not None or time.monotonic() > give_up:
                log = self.dep.stack.log("worker")[-3000:]
                raise RuntimeError(
                    f"the Celery worker does not answer (exit {worker.returncode})\n{log}"
                )
            if time.monotonic() > resend_at:
                self.resent += 1
                pending.append(self.probe.send(self.dep.tenant, self.ciphertext))
                resend_at = time.monotonic() + RESEND_SECONDS
            time.sleep(0.002)

    def set_root(self, action: str) -> None:
        reply = key_action(self.dep.stack, self.dep.tenant, self.dep.l1_id, action)
        assert reply.status == 200, reply

    def warm_up(self) -> None:
        """Until every gunicorn worker has served a successful decrypt, and the worker too."""
        served: set[int] = set()
        deadline = time.monotonic() + GIVE_UP_SECONDS

        def poll(client: HttpClient) -> None:
            while not self.pids <= served and time.monotonic() < deadline:
                status, pid, _ = self.decrypt(client)
                if status == 200:
                    served.add(pid)

        threads = [threading.Thread(target=poll, args=(c,)) for c in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert self.pids <= served, f"workers {self.pids - served} never served a decrypt"
        assert self.celery_ok(), "the Celery worker did not decrypt after enable"

    def trial(self) -> Trial:
        self.set_root("enable")
        self.warm_up()
        result = Trial()
        go, done = threading.Event(), threading.Event()
        lock = threading.Lock()
        t0 = [0.0]

        def refused(process: str) -> None:
            with lock:
                result.first_refusal_ms.setdefault(process, (time.monotonic() - t0[0]) * 1000)
                if len(result.first_refusal_ms) == len(self.processes):
                    done.set()

        def web(client: HttpClient) -> None:
            go.wait()
            while not done.is_set() and time.monotonic() - t0[0] < GIVE_UP_SECONDS:
                status, pid, code = self.decrypt(client)
                if status == 200:
                    with lock:
                        result.late_successes += 1
                elif code == "key_disabled":
                    refused(f"web:{pid}")
                else:
                    result.unexpected.append(f"{status} {code}")

        def worker() -> None:
            go.wait()
            while not done.is_set() and time.monotonic() - t0[0] < GIVE_UP_SECONDS:
                if self.celery_ok():
                    with lock:
                        result.late_successes += 1
                else:
                    refused(CELERY)

        threads = [threading.Thread(target=web, args=(c,)) for c in self.clients]
        threads.append(threading.Thread(target=worker))
        for thread in threads:
            thread.start()
        self.set_root("disable")
        t0[0] = time.monotonic()
        go.set()
        for thread in threads:
            thread.join()
        return result


def main() -> None:
    with deployment(web_workers=2, worker_app="bench.celery_fastpoll") as dep:
        bench = Bench(dep)
        trials = [bench.trial() for _ in range(TRIALS)]
        bench.set_root("enable")
        restarted = web_worker_pids(dep.stack) != bench.pids
    processes = bench.processes
    slowest = [max(t.first_refusal_ms.get(p, float("inf")) for p in processes) for t in trials]
    web = [ms for t in trials for p, ms in t.first_refusal_ms.items() if p != CELERY]
    celery = [t.first_refusal_ms.get(CELERY, float("inf")) for t in trials]
    late = sum(t.late_successes for t in trials)
    unexpected = [u for t in trials for u in t.unexpected]
    p50, p99 = percentile(slowest, 50), percentile(slowest, 99)
    report(
        [
            f"kill switch: {TRIALS} trials over {len(processes)} processes "
            f"({', '.join(processes)})",
            "  disable response -> first refusal, slowest process per trial: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(slowest):.1f} ms (target p99 < 100)",
            f"  gunicorn workers: p50 {percentile(web, 50):.1f} ms, "
            f"p99 {percentile(web, 99):.1f} ms",
            f"  celery worker (5 ms broker poll): p50 {percentile(celery, 50):.1f} ms, "
            f"p99 {percentile(celery, 99):.1f} ms",
            f"  requests/tasks sent after the disable response that still succeeded: {late}",
            f"  unexpected answers: {len(unexpected)} {sorted(set(unexpected))[:5]}",
            f"  probe tasks re-sent after {RESEND_SECONDS} s without an answer: {bench.resent}",
            f"  gunicorn workers replaced during the run: {restarted}",
        ],
        {
            "bench": "killswitch",
            "trials": TRIALS,
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "processes": len(processes),
            "web_p99_ms": round(percentile(web, 99), 2),
            "celery_p99_ms": round(percentile(celery, 99), 2),
            "late_successes": late,
            "unexpected": len(unexpected),
            "probes_resent": bench.resent,
        },
    )


if __name__ == "__main__":
    main()
