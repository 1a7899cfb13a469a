"""The data plane against Django's path: `python -m bench.dataplane` (issue 15).

Deployments side by side in one run, each with BENCH_DP_WORKERS web worker processes (default
2) and auditing on, identical but for what the side's label names. For each, in alternating
rounds:

1. Saturation: BENCH_DP_THREADS client threads (default 6) send single `generate-data-key`
   requests back to back for BENCH_DP_SECONDS. `ops_per_server_cpu_s` is the requests answered
   200 per CPU-second the web processes (the server's main process and its workers) used
   meanwhile, read from their own CPU times, so the load generator's share of the cores does
   not count; `ops_per_server_cpu_s_with_db` also counts the deployment's PostgreSQL backends.
2. Latency: requests paced at half the saturated rate (open loop: each latency runs from the
   moment the request was due, so a stall is not hidden), each client in its own process;
   `p99_ms`.

BENCH_DP_SIDES (default fast,django,fast-gunicorn,django-gunicorn) names the deployments, the
first reported plainly and the others with their name as prefix. A label is the path, `fast`
or `django` (KCM_DATAPLANE), then optionally `-gunicorn` (KCM_WEB_SERVER=gunicorn instead of
the default, granian: kms_project/web.py) and `-group` (KCM_AUDIT_GROUP_COMMIT=true).
`vs_django` is the ratio of `fast`'s and `django`'s `ops_per_server_cpu_s`, both on the default
server; `vs_django_gunicorn`, if both ran, the data plane on granian against Django's path on
gunicorn (the first release's deployment). `errors` counts every answer other than 200 and
every failed request in every deployment. The rate limits are raised out of the way (their
code still runs on every request): the load comes from one client address and token. Last
line: one JSON object `{"bench": "dataplane", ...}`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import HttpClient, Operation, percentile, report, run_load
from tests.e2e.stack import RATE_LIMITS_AWAY, LiveStack
from tests.e2e.tenantkit import CONTEXT, KEY_ADMIN, KEY_USER, create_chain, provision_tenant

ROUNDS = int(os.environ.get("BENCH_DP_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_DP_SECONDS", "8"))
THREADS = int(os.environ.get("BENCH_DP_THREADS", "6"))
WORKERS = int(os.environ.get("BENCH_DP_WORKERS", "2"))
SIDES = os.environ.get("BENCH_DP_SIDES", "fast,django,fast-gunicorn,django-gunicorn").split(",")
LATENCY_SECONDS = float(os.environ.get("BENCH_DP_LATENCY_SECONDS", "8"))
PATH = "/api/v1/service-keys/payments/generate-data-key/"
BODY = ("{" + f'"context": {{"purpose": "{CONTEXT["purpose"]}"}}' + "}").encode()


@dataclass
class Side:
    label: str
    stack: LiveStack
    clients: list[HttpClient]
    server: int  # the web server's main process
    ops: int = 0
    web_cpu: float = 0.0
    db_cpu: float = 0.0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def web_processes(self) -> list[int]:
        return [self.server, *_descendants(self.server)]

    def db_processes(self) -> list[int]:
        """The deployment's PostgreSQL backends (their title names the database)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if title.startswith("postgres:") and f" {self.stack.database} " in title:
                    found.append(int(entry.name))
        return found


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each process still running."""
    times = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            times[pid] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return times


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    # A process that ended in between counts what it used until its last reading.
    return sum(after.get(pid, before[pid]) - before[pid] for pid in before) + sum(
        cpu for pid, cpu in after.items() if pid not in before
    )


def _operation(client: HttpClient) -> Operation:
    def send() -> int:
        return client.send("POST", PATH, BODY)[0]

    return send


def saturate(side: Side) -> None:
    web, db = side.web_processes(), side.db_processes()
    web0, db0 = _cpu(web), _cpu(db)
    result = run_load([_operation(c) for c in side.clients], SECONDS)
    web1, db1 = _cpu(web), _cpu(db)
    side.ops += result.statuses[200]
    side.seconds += result.seconds
    side.web_cpu += _spent(web0, web1)
    side.db_cpu += _spent(db0, db1)
    for status, count in result.statuses.items():
        if status != 200:
            side.errors[str(status)] += count
    side.errors.update(result.failures)


def paced(side: Side, rate: float) -> None:
    """Open loop at `rate` requests/s over the side's clients, each on its own schedule and in
    its own process: client threads sharing one GIL would add their wait for it to every
    latency (a reply that arrived while another client thread ran), which is not the server's.
    """
    count = len(side.clients)
    interval = count / rate
    began = time.monotonic() + 0.5  # CLOCK_MONOTONIC: one clock for every process
    port, host, token = side.clients[0].address()
    end = began + LATENCY_SECONDS
    jobs = [(port, host, token, began + i * interval / count, interval, end) for i in range(count)]
    pool = multiprocessing.get_context("fork").Pool(count)
    try:
        results = pool.starmap(_paced_client, jobs)
        # Let them finish rather than SIGTERM them (as leaving a `with` block would): one
        # killed while holding the pool's queue lock leaves another blocked on it for good.
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    for latencies, errors in results:
        side.latencies.extend(latencies)
        side.errors.update(errors)


def _paced_client(
    port: int, host: str, token: str, due: float, interval: float, end: float
) -> tuple[list[float], Counter[str]]:
    client = HttpClient(port, host, token)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    client.send("POST", PATH, BODY)  # connected before the clock starts
    while due < end:
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            status = client.send("POST", PATH, BODY)[0]
            if status != 200:
                errors[str(status)] += 1
        except OSError as exc:
            errors[type(exc).__name__] += 1
        latencies.append(time.monotonic() - due)
        due += interval
    client.close()
    return latencies, errors


def _deploy(stack_of: ExitStack, label: str) -> Side:
    path, *options = label.split("-")
    if path not in ("fast", "django") or not set(options) <= {"gunicorn", "group"}:
        raise SystemExit(f"BENCH_DP_SIDES: unknown deployment {label!r}")
    env = {
        **os.environ,
        "KCM_DATAPLANE": path,
        "KCM_WEB_SERVER": "gunicorn" if "gunicorn" in options else "granian",
        "KCM_AUDIT_GROUP_COMMIT": "true" if "group" in options else "false",
        "KCM_WEB_WORKERS": str(WORKERS),
        **RATE_LIMITS_AWAY,
    }
    stack = stack_of.enter_context(LiveStack(web_workers=WORKERS, env=env))
    tenant = provision_tenant(stack, "bench", (KEY_ADMIN, KEY_USER))
    create_chain(stack, tenant)
    clients = [HttpClient(stack.port, tenant.host, tenant.tokens[KEY_USER]) for _ in range(THREADS)]
    for client in clients:  # warm every worker's caches
        for _ in range(20):
            client.send("POST", PATH, BODY)
    return Side(label, stack, clients, stack.procs["web"].pid)


def main() -> None:
    with ExitStack() as stack_of:
        sides = [_deploy(stack_of, label) for label in SIDES]
        for _ in range(ROUNDS):
            for side in sides:
                saturate(side)
        for side in sides:
            paced(side, side.ops / side.seconds / 2)
    figures: dict[str, object] = {"bench": "dataplane"}
    lines = []
    for side in sides:
        per_cpu = side.ops / side.web_cpu if side.web_cpu else 0.0
        with_db = side.ops / (side.web_cpu + side.db_cpu) if side.web_cpu else 0.0
        rate = side.ops / side.seconds
        p50, p99 = (percentile(side.latencies, p) * 1000 for p in (50, 99))
        lines.append(
            f"{side.label:>15}: {rate:7.0f} req/s, {side.ops} ops on {side.web_cpu:.2f} web CPU-s"
            f" + {side.db_cpu:.2f} PostgreSQL CPU-s: {per_cpu:.0f} ops/web CPU-s, {with_db:.0f}"
            f" with PostgreSQL; at {rate / 2:.0f} req/s p50 {p50:.2f} ms p99 {p99:.2f} ms;"
            f" errors {dict(side.errors) or 0}"
        )
        prefix = "" if side is sides[0] else side.label.replace("-", "_") + "_"
        figures[f"{prefix}ops_per_server_cpu_s"] = round(per_cpu, 1)
        figures[f"{prefix}ops_per_server_cpu_s_with_db"] = round(with_db, 1)
        figures[f"{prefix}rate"] = round(rate, 1)
        figures[f"{prefix}p99_ms"] = round(p99, 2)
    per_cpu_of = {side.label: side.ops / side.web_cpu for side in sides if side.web_cpu}
    if "fast" in per_cpu_of and "django" in per_cpu_of:
        figures["vs_django"] = round(per_cpu_of["fast"] / per_cpu_of["django"], 2)
    if "fast" in per_cpu_of and "django-gunicorn" in per_cpu_of:
        figures["vs_django_gunicorn"] = round(per_cpu_of["fast"] / per_cpu_of["django-gunicorn"], 2)
    figures["errors"] = sum(sum(side.errors.values()) for side in sides)
    figures.update(workers=WORKERS, threads=THREADS, rounds=ROUNDS, seconds=SECONDS)
    report(lines, figures)


if __name__ == "__main__":
    main()
