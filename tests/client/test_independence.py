"""kcm_client installs and runs alone: it imports nothing of the server, and its package
needs only httpx and cryptography (click and rich only for the `cli` extra)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
ALLOWED = {"httpx", "cryptography", "click", "rich", "kcm_client"}


def test_the_client_imports_only_the_standard_library_and_its_dependencies() -> None:
    import sys

    for path in (CLIENT / "kcm_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            foreign = roots - ALLOWED - set(sys.stdlib_module_names)
            assert not foreign, f"{path.name} imports {foreign}"


def test_the_sdk_depends_on_httpx_and_cryptography_alone() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert {d.split(">")[0] for d in project["dependencies"]} == {"httpx", "cryptography"}
    sdk = [  # cli*.py, and __main__.py which only loads them
        p for p in (CLIENT / "kcm_client").glob("*.py")
        if not p.name.startswith("cli") and p.name != "__main__.py"
    ]  # fmt: skip
    for path in sdk:
        assert "import click" not in path.read_text() and "rich" not in path.read_text()


def test_kcm_without_the_cli_extra_says_what_to_install() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"kcm": "kcm_client.__main__:run"}
    without_click = (
        "import sys; sys.modules['click'] = None; from kcm_client.__main__ import run; run()"
    )
    done = subprocess.run(
        [sys.executable, "-c", without_click], capture_output=True, check=False,
        env={"PYTHONPATH": str(CLIENT)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert b"pip install 'kcm-client[cli]'" in done.stderr
