"""`kcm keys`, `kcm jobs` and `kcm audit`: the key admin's and auditor's commands."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .cli import EXIT_REFUSED, command, emit, make_client

TERMINAL = {"succeeded", "failed", "cancelled"}


def register(main: click.Group) -> None:
    main.add_command(keys)
    main.add_command(jobs)
    main.add_command(audit)


@click.group()
def keys() -> None:
    """Service keys (L3) and the chain above them."""


@keys.command("list")
@command
def keys_list() -> None:
    """List the service keys with their state and primary version."""
    ctx = click.get_current_context()
    with make_client(ctx) as kcm:
        found = kcm.service_keys()
    lines = [f"{'NAME':<24} {'STATE':<18} {'VERSION':>7}  ID"] + [
        f"{k.get('name', ''):<24} {k.get('state', ''):<18} {k.get('primary_version', '')!s:>7}  "
        f"{k.get('id', '')}"
        for k in found
    ]
    emit(ctx, found, "\n".join(lines))


@keys.command("create")
@click.argument("name")
@click.option("--customer-key", "customer_key_id", help="The L1 to create it under (its id).")
@click.option("--root", is_flag=True, help="Create a customer key (L1) named NAME instead.")
@command
def keys_create(name: str, customer_key_id: str | None, root: bool) -> None:
    """Create a service key NAME (or, with --root, a customer key)."""
    ctx = click.get_current_context()
    with make_client(ctx) as kcm:
        made = (
            kcm.create_customer_key(name)
            if root
            else kcm.create_service_key(name, customer_key_id=customer_key_id)
        )
    emit(ctx, made, f"created {made.get('level', 'key')} {name} ({made.get('id')})")


def _action(action: str, doc: str) -> click.Command:
    @click.argument("key_id")
    @command
    def run(key_id: str) -> None:
        ctx = click.get_current_context()
        with make_client(ctx) as kcm:
            done = kcm.key_action(key_id, action)
        emit(ctx, done, f"{action}: {done.get('id')} is {done.get('state')}"
             f" (primary version {done.get('primary_version')})")  # fmt: skip

    run.__doc__ = doc
    return click.command(action)(run)


keys.add_command(_action("rotate", "Rotate key KEY_ID (a new primary version; queues a rewrap)."))
keys.add_command(_action("disable", "Disable key KEY_ID: everything below it stops working."))
keys.add_command(_action("enable", "Enable key KEY_ID again."))


@click.group()
def jobs() -> None:
    """Rotation and rewrap jobs."""


@jobs.command("watch")
@click.argument("job_id")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between polls."
)
@click.option(
    "--timeout", type=float, default=0, help="Give up after this many seconds (0: never)."
)
@command
def jobs_watch(job_id: str, interval: float, timeout: float) -> None:
    """Follow job JOB_ID with a live progress bar until it ends; exit 1 unless it succeeded."""
    ctx = click.get_current_context()
    quiet = ctx.obj.get("json")
    deadline = time.monotonic() + timeout if timeout else None
    with make_client(ctx) as kcm:
        job = kcm.job(job_id)
        if not quiet and job["state"] not in TERMINAL:
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"job {job_id[:8]}", total=1.0)
                while job["state"] not in TERMINAL and _before(deadline):
                    label = f"{job['state']} {job['done']}/{job['total']}"
                    bar.update(task, completed=job.get("progress", 0.0), description=label)
                    time.sleep(interval)
                    job = kcm.job(job_id)
        while job["state"] not in TERMINAL and _before(deadline):
            time.sleep(interval)
            job = kcm.job(job_id)
    emit(ctx, job, f"job {job_id}: {job['state']} ({job['done']} done, {job['failed']} failed)")
    if job["state"] != "succeeded":
        ctx.exit(EXIT_REFUSED)


def _before(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


@click.group()
def audit() -> None:
    """The tenant's audit log."""


@audit.command("verify")
@command
def audit_verify() -> None:
    """Verify the audit hash chain on the server; exit 1 if it is broken."""
    ctx = click.get_current_context()
    with make_client(ctx) as kcm:
        verdict = kcm.audit_verify()
    emit(ctx, verdict, f"audit chain: {'ok' if verdict.get('ok') else 'BROKEN'} "
         f"({verdict.get('checked')} events checked)")  # fmt: skip
    if not verdict.get("ok"):
        ctx.exit(EXIT_REFUSED)


@audit.command("export")
@click.option("-o", "--output", required=True, help="File for the events; the signed manifest "
              "goes beside it as OUTPUT.manifest.json.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--since", default="")
@click.option("--until", default="")
@click.option("--action", default="")
@click.option("--wait", type=float, default=600, show_default=True, help="Seconds to wait.")
@command
def audit_export(output: str, fmt: str, since: str, until: str, action: str, wait: float) -> None:
    """Export the audit log (filtered) with its signed manifest."""
    ctx = click.get_current_context()
    deadline = time.monotonic() + wait
    with make_client(ctx) as kcm:
        job: dict[str, Any] = kcm.audit_export_start(fmt, since=since, until=until, action=action)
        while job["state"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            job = kcm.audit_export(str(job["id"]))
        if job["state"] != "succeeded":
            emit(ctx, job, f"export {job['id']}: {job['state']} {job.get('error') or ''}")
            ctx.exit(EXIT_REFUSED)
        with open(output, "wb") as out:
            for chunk in kcm.audit_export_download(str(job["id"])):
                out.write(chunk)
        manifest = kcm.audit_export_manifest(str(job["id"]))
    with open(output + ".manifest.json", "w") as out_manifest:
        json.dump(manifest, out_manifest, indent=2)
    emit(ctx, {**job, "output": output}, f"exported {job.get('total')} events → {output}")
