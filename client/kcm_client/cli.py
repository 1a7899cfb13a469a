"""`kcm`: KCM's command line (click for parsing, rich for progress bars).

Exit codes (also in `kcm --help`):
  0 success · 1 refused by KCM or a failed check · 2 usage error · 3 wrong or missing
  credentials, or not allowed · 4 the message was refused (changed, truncated, wrong context)
  · 5 KCM unreachable or unavailable · 6 configuration (no profile, token file permissions)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from . import errors
from .client import Client

EXIT_REFUSED, EXIT_AUTH, EXIT_MESSAGE, EXIT_UNAVAILABLE, EXIT_CONFIG = 1, 3, 4, 5, 6
PROGRESS_FROM = 8 * 1024 * 1024  # a progress bar for inputs at least this large
F = TypeVar("F", bound=Callable[..., Any])


class ConfigError(click.ClickException):
    exit_code = EXIT_CONFIG


def config_dir() -> Path:
    base = os.environ.get("KCM_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "kcm"
    )
    return Path(base)


def load_profile(name: str) -> dict[str, Any]:
    path = config_dir() / "profiles.json"
    profiles = json.loads(path.read_text()) if path.exists() else {}
    if name not in profiles:
        raise ConfigError(f"no profile {name!r}: run `kcm login --url URL` first")
    profile: dict[str, Any] = profiles[name]
    return profile


def save_profile(name: str, profile: dict[str, Any]) -> Path:
    path = config_dir() / "profiles.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = json.loads(path.read_text()) if path.exists() else {}
    profiles[name] = profile
    path.write_text(json.dumps(profiles, indent=2) + "\n")
    return path


def read_token(token_file: str | None) -> str:
    """KCM_TOKEN, else the profile's token file, which only its owner may read or write."""
    token = os.environ.get("KCM_TOKEN", "").strip()
    if token:
        return token
    if not token_file:
        raise ConfigError("no token: set KCM_TOKEN or log in with --token-file")
    path = Path(token_file).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        raise ConfigError(f"cannot read the token file {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the token file {path} must be readable by you alone (chmod 600)")
    return path.read_text().strip()


def make_client(ctx: click.Context) -> Client:
    profile = load_profile(ctx.obj["profile"])
    return Client(
        profile["url"], read_token(profile.get("token_file")),
        host_header=profile.get("host") or None, timeout=float(profile.get("timeout", 30)),
    )  # fmt: skip


def exit_code(exc: errors.KcmError) -> int:
    if isinstance(exc, errors.AuthenticationError | errors.PermissionDenied):
        return EXIT_AUTH
    if isinstance(exc, errors.ServiceUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(
        exc, errors.MessageError | errors.ContextMismatch | errors.CiphertextInvalid
        | errors.CiphertextMalformed | errors.CiphertextWrongKey | errors.CiphertextWrongTenant,
    ):  # fmt: skip
        return EXIT_MESSAGE
    return EXIT_REFUSED


HINTS = {
    errors.AuthenticationError: "the token was refused: check KCM_TOKEN or the token file",
    errors.PermissionDenied: "this token's role may not do that",
    errors.TransportError: "is the URL right and the server running?",
}


def command(func: F) -> F:
    """Adds `--json` and turns every KcmError into a one-line message and an exit code."""

    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args: Any, as_json: bool, **kwargs: Any) -> Any:
        ctx.obj["json"] = as_json
        try:
            return func(*args, **kwargs)
        except OSError as exc:  # a file that cannot be read or written
            click.echo(f"kcm: error: {exc.strerror or exc}: {exc.filename or ''}", err=True)
            ctx.exit(EXIT_REFUSED)
        except errors.KcmError as exc:
            hint = next((h for cls, h in HINTS.items() if isinstance(exc, cls)), "")
            if as_json:
                body = {"code": exc.code, "detail": exc.detail, "status": exc.status}
                click.echo(json.dumps({"error": body}))
            click.echo(f"kcm: error: {exc}" + (f" ({hint})" if hint else ""), err=True)
            ctx.exit(exit_code(exc))

    return wrapper  # type: ignore[return-value]


def emit(ctx: click.Context, data: Any, text: str | None = None) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, default=str))
    else:
        click.echo(text if text is not None else json.dumps(data, indent=2, default=str))


def parse_context(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    context = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--context")
        context[name] = value
    return context


def progress_bar(total: int | None, label: str, force: bool | None) -> Any:
    """A rich progress bar on stderr for large inputs (or as --progress/--no-progress say)."""
    show = force if force is not None else bool(total and total >= PROGRESS_FROM)
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), console=Console(stderr=True), transient=True,
    )  # fmt: skip
    task = bar.add_task(label, total=total)
    return bar, lambda n: bar.advance(task, n)


@click.group(
    epilog="Exit codes: 0 ok, 1 refused or check failed, 2 usage, 3 credentials or role, "
    "4 message refused (changed, truncated, wrong context), 5 KCM unavailable, 6 configuration."
)
@click.option("--profile", default=lambda: os.environ.get("KCM_PROFILE", "default"),
              show_default="default or $KCM_PROFILE", help="Profile from `kcm login`.")  # fmt: skip
@click.version_option("0.1.0", prog_name="kcm")
@click.pass_context
def main(ctx: click.Context, profile: str) -> None:
    """Envelope encryption with KCM data keys, and the key admin's everyday commands."""
    ctx.ensure_object(dict)
    ctx.obj["profile"] = profile


@main.command()
@click.option("--url", required=True, help="KCM's address, e.g. http://localhost:8000.")
@click.option("--host", default="", help="Tenant host name, when --url is not the tenant's.")
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="File holding the token (0600)."
)
@command
def login(url: str, host: str, token_file: str | None) -> None:
    """Save a profile (URL, tenant host, token file) and check the token against KCM."""
    ctx = click.get_current_context()
    profile = {
        "url": url,
        "host": host,
        "token_file": str(Path(token_file).resolve()) if token_file else None,
    }
    token = read_token(profile["token_file"])
    with (
        Client(url, token, host_header=host or None) as kcm,
        contextlib.suppress(errors.PermissionDenied),  # valid, but may not list keys
    ):
        kcm.service_keys()
    path = save_profile(ctx.obj["profile"], profile)
    emit(
        ctx,
        {"profile": ctx.obj["profile"], "path": str(path)},
        f"Logged in; profile saved in {path}",
    )


def _open_in(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    handle = open(path, "rb")  # noqa: SIM115
    return handle, os.fstat(handle.fileno()).st_size


def _run_stream(
    ctx: click.Context, src_path: str, out: str | None, progress: bool | None, label: str,
    work: Callable[[IO[bytes], IO[bytes], Callable[[int], None] | None], int],
) -> None:  # fmt: skip
    src, size = _open_in(src_path)
    dst: IO[bytes] = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115
    shown = progress_bar(size, label, progress)
    ok = False
    try:
        if shown:
            with shown[0]:
                total = work(src, dst, shown[1])
        else:
            total = work(src, dst, None)
        ok = True
    finally:
        if out:
            dst.close()
            if not ok:
                os.unlink(out)  # never leave partial or unverified plaintext behind
        if src_path != "-":
            src.close()
    summary = {"input": src_path, "output": out or "-", "bytes": total}
    if out:
        emit(ctx, summary, f"{label}: {total} bytes → {out}")
    elif ctx.obj.get("json"):
        click.echo(json.dumps(summary), err=True)


@main.command()
@click.argument("src", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", help="Output file (default: standard output).")
@click.option("-k", "--key", "service_key", required=True, help="Service key name.")
@click.option(
    "-c", "--context", "pairs", multiple=True, help="Encryption context NAME=VALUE (repeatable)."
)
@click.option("--frame-size", type=click.IntRange(1, 16 * 1024 * 1024), default=None)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: inputs ≥ 8 MiB)."
)
@command
def encrypt(src: str, output: str | None, service_key: str, pairs: tuple[str, ...],
            frame_size: int | None, progress: bool | None) -> None:  # fmt: skip
    """Encrypt SRC (a file, or - for standard input) into a KCM message."""
    ctx = click.get_current_context()
    context = parse_context(pairs)
    with make_client(ctx) as kcm:

        def work(i: IO[bytes], o: IO[bytes], p: Callable[[int], None] | None) -> int:
            return kcm.encrypt_stream(
                i, o, service_key=service_key, context=context, frame_size=frame_size, progress=p
            )

        _run_stream(ctx, src, output, progress, "encrypt", work)


@main.command()
@click.argument("src", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", help="Output file (default: standard output); deleted on error.")
@click.option("-c", "--context", "pairs", multiple=True, help="Expected context NAME=VALUE.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: inputs ≥ 8 MiB)."
)
@command
def decrypt(src: str, output: str | None, pairs: tuple[str, ...], progress: bool | None) -> None:
    """Decrypt a KCM message. Frames are written as each verifies; on error the output file is
    deleted (on standard output, discard what was written)."""
    ctx = click.get_current_context()
    context = parse_context(pairs)
    with make_client(ctx) as kcm:
        _run_stream(ctx, src, output, progress, "decrypt", lambda i, o, p: kcm.decrypt_stream(
            i, o, context=context, progress=p))  # fmt: skip


@main.command()
@click.argument("src", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@command
def header(src: str) -> None:
    """Show a message's header without decrypting it (no server call, no token needed)."""
    import base64

    from .message import header_read

    handle, _ = _open_in(src)
    found = header_read(handle.read)
    data = {
        "format": found.version, "algorithm": found.algorithm, "frame_size": found.frame_size,
        "service_key": found.service_key, "context": found.context,
        "envelope": base64.b64encode(found.envelope).decode(), "message_id": found.message_id.hex(),
    }  # fmt: skip
    emit(click.get_current_context(), data, "\n".join(f"{k}: {v}" for k, v in data.items()))


from . import cli_admin  # noqa: E402  (registers keys, jobs and audit on `main`)

cli_admin.register(main)

if __name__ == "__main__":
    main(prog_name="kcm")
