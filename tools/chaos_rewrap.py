"""Chaos test of rewrap jobs: rotate every tenant's L2 (a platform-wide rotation) while the
Celery worker is killed with SIGKILL at random moments, then prove that nothing was lost.

    python tools/chaos_rewrap.py                       # 100 tenants x 1,000 service keys, 5 kills
    python tools/chaos_rewrap.py --tenants 3 --keys 400 --kills 5 --batch-size 20 --pause-ms 100

It builds its own deployment (LiveStack: scratch database, web server) with a private SoftHSM2
token, creates the tenants and a data key per service key, starts a prefork worker (KCM's app,
its embedded broker polled every 5 ms as in bench.killswitch), asks the platform API for the
rotation, and then loops: let the worker run for a random while (--run-min..--run-max), kill its
whole process group (SIGKILL: no clean-up of any kind), start a new one. After the last kill
the job runs to the end. Every tenant is then checked: every service key hangs under the new
L2 version, the old one is retired, and every data key made before the rotation decrypts to
the same bytes. Prints the figures, then one JSON line; exits 1 if anything is off.

Needs what `make test` provides (KCM_DATABASE_URL naming a PostgreSQL server it may create
databases on); run it as `.venv/bin/python tools/devstack.py exec -- python tools/chaos_rewrap.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository's packages (tests.e2e) must be importable.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.rotationkit import in_stack, private_softhsm  # noqa: E402
from tests.e2e.stack import LiveStack  # noqa: E402

# Timing, not cryptography: the kill moments only need to be unpredictable to the worker.
CHAOS = random.Random()  # noqa: S311


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--keys", type=int, default=1000, help="service keys per tenant")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs while work remains")
    # Small batches and a pause stretch the run, so that the kills land all through it (at
    # full speed 100,000 keys take a few seconds, less than a worker's start-up and a kill).
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--pause-ms", type=int, default=50, help="pause between batches")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork worker processes")
    parser.add_argument("--run-min", type=float, default=1.0, help="seconds of work before a kill")
    parser.add_argument("--run-max", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    return parser.parse_args(argv)


class Chaos:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        env = {
            **os.environ,
            **private_softhsm(folder / "hsm"),
            "KCM_REWRAP_BATCH_SIZE": str(args.batch_size),
            "KCM_REWRAP_BATCH_PAUSE_MS": str(args.pause_ms),
            # INFO: the worker says "ready." at that level (KCM_LOG_LEVEL overrides `-l`).
            "KCM_LOG_LEVEL": "INFO",
        }
        self.stack = LiveStack(web_workers=1, celery_pool=None, env=env)
        self.workers = 0
        self.kills: list[dict[str, Any]] = []
        self.token = ""
        self.schemas: list[str] = []

    # --- the deployment --------------------------------------------------------------------

    def populate(self) -> float:
        """Tenants, keys and data keys, two shell processes in parallel (one per core)."""
        began = time.monotonic()
        slugs = [f"chaos-{index:04d}" for index in range(self.args.tenants)]
        halves = [slugs[0::2], slugs[1::2]]
        found: list[list[str]] = [[], []]

        def fill(index: int) -> None:
            if halves[index]:
                found[index] = in_stack(
                    self.stack, None, "populate", halves[index], self.args.keys, str(self.folder)
                )

        threads = [threading.Thread(target=fill, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.schemas = sorted(found[0] + found[1])
        assert len(self.schemas) == self.args.tenants, "populating failed"
        self.token = in_stack(self.stack, None, "platform_token")
        return time.monotonic() - began

    def start_worker(self) -> None:
        self.workers += 1
        name = f"worker-{self.workers}"
        self.stack._spawn(
            name,
            # KCM's app with the embedded broker polled every 5 ms (see bench.celery_fastpoll):
            # at the default second, the run would mostly time the broker's polling.
            [sys.executable, "-m", "celery", "-A", "bench.celery_fastpoll", "worker", "-l", "info",
             "--pool", "prefork", "--concurrency", str(self.args.concurrency),
             "-n", f"chaos{self.workers}@%h"],
        )  # fmt: skip
        self.stack._wait(
            lambda: "ready" in self.stack.log(name) or _started(self.stack.procs[name]),
            120,
            f"{name} to start",
        )

    def kill_worker(self) -> None:
        # Forget it first: the stack treats any process of its own that exits as a failure.
        proc = self.stack.procs.pop(f"worker-{self.workers}")
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and every pool process
        proc.wait()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, _, raw = self.stack.request(
            method,
            path,
            host=self.stack.env.get("KCM_BASE_DOMAIN", "localhost"),
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        data = json.loads(raw) if raw else None
        assert status < 300, (status, data)
        return data

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.stack.start()
        populate_seconds = self.populate()
        total = self.args.tenants * self.args.keys
        print(
            f"populated {self.args.tenants} tenants x {self.args.keys} service keys "
            f"({total} keys, a data key each) in {populate_seconds:.1f} s",
            flush=True,
        )
        self.start_worker()
        began = time.monotonic()
        run = self.api("POST", "/api/v1/platform/rotations/", {"level": "L2"})
        path = f"/api/v1/platform/rotations/{run['id']}/"
        status = run
        while len(self.kills) < self.args.kills:
            time.sleep(CHAOS.uniform(self.args.run_min, self.args.run_max))
            status = self.api("GET", path)
            if status["state"] == "succeeded":
                break  # too late to kill: the work is done (reported below)
            self.kill_worker()
            after = self.api("GET", path)
            self.kills.append(
                {"at_s": round(time.monotonic() - began, 2), "state": after["state"],
                 "tenants_fanned_out": after["tenants"], "done": after["done"]}
            )  # fmt: skip
            print(f"kill {len(self.kills)} at {self.kills[-1]['at_s']} s: run {after['state']}, "
                  f"{after['tenants']} tenants fanned out, {after['done']}/{total} keys moved",
                  flush=True)  # fmt: skip
            self.start_worker()
        deadline = began + self.args.timeout
        while status["state"] != "succeeded" or status["done"] < total:
            assert time.monotonic() < deadline, f"not finished: {status}"
            if status["state"] == "incomplete":
                break
            time.sleep(0.5)
            status = self.api("GET", path)
        rewrap_seconds = time.monotonic() - began
        print(f"run {status['state']} after {rewrap_seconds:.1f} s: {status['jobs_by_state']}",
              flush=True)  # fmt: skip
        checked = self.verify()
        lost = total - checked["ok"]
        return {
            "tenants": self.args.tenants,
            "service_keys": total,
            "kills": len(self.kills),
            "kill_log": self.kills,
            "run_state": status["state"],
            "jobs_by_state": status["jobs_by_state"],
            "job_done": status["done"],
            "job_failed": status["failed"],
            "rewrap_seconds": round(rewrap_seconds, 1),
            "keys_per_second_overall": round(total / rewrap_seconds, 1),
            "verified_ok": checked["ok"],
            "verify_failures": checked["failures"],
            "misplaced": checked["misplaced"],
            "l2_versions": checked["l2_versions"],
            "lost": lost,
            "passed": (
                len(self.kills) >= self.args.kills
                and status["state"] == "succeeded"
                and lost == 0
                and checked["misplaced"] == 0
                and checked["l2_versions"] == {"v1=RETIRED,v2=ENABLED": self.args.tenants}
            ),
        }

    def verify(self) -> dict[str, Any]:
        """Both halves of the tenants checked in parallel shell processes, results summed."""
        halves = [self.schemas[0::2], self.schemas[1::2]]
        reports: list[dict[str, Any]] = [{}, {}]

        def check(index: int) -> None:
            reports[index] = in_stack(self.stack, None, "verify", halves[index], str(self.folder))

        threads = [threading.Thread(target=check, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        merged: dict[str, Any] = {"ok": 0, "failures": {}, "misplaced": 0, "l2_versions": {}}
        for report in reports:
            merged["ok"] += report.get("ok", 0)
            merged["misplaced"] += report.get("misplaced", 0)
            for field in ("failures", "l2_versions"):
                for name, count in report.get(field, {}).items():
                    merged[field][name] = merged[field].get(name, 0) + count
        return merged


def _started(proc: Any) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the worker exited with {proc.returncode}")
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed is not None:
        CHAOS.seed(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="kcm-chaos-"))
    chaos = Chaos(args, folder)
    try:
        result = chaos.run()
    finally:
        chaos.stack.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{result['kills']} kills; {result['verified_ok']}/{result['service_keys']} data keys "
          f"decrypt as before; lost {result['lost']}; misplaced {result['misplaced']}; "
          f"passed: {result['passed']}")  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
