"""The import-linter contract in pyproject.toml (run by `make lint`): the layers of
ARCHITECTURE.md, kept by the tree, and broken by any import of a higher layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACT = "Apps import only lower layers"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contract, on the packages under `tree`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contract_lists_the_layers_top_first_without_exceptions() -> None:
    config = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert contract["type"] == "layers"
    assert contract["layers"] == [
        "kms_project",
        "apps.approvals",
        "apps.mfa | apps.sso",
        "apps.rotation",
        "apps.keychain",
        "apps.tenants",
        "apps.audit",
        "apps.keystores",
        "apps.core",
    ]
    assert "ignore_imports" not in contract


def test_the_tree_keeps_the_contract() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{CONTRACT} KEPT" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The project's packages, sources only, in a scratch folder."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("apps", "kms_project"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=ignore)
    return tmp_path


@pytest.mark.parametrize(
    ("module", "code", "broken"),
    [
        pytest.param(
            "apps/core/errors.py",
            "from apps.rotation import services  # noqa\n",
            "apps.core is not allowed to import apps.rotation",
            id="core imports rotation",
        ),
        pytest.param(
            "apps/audit/chain.py",
            "def _lazy():\n    from apps.tenants.models import Tenant  # noqa\n",
            "apps.audit is not allowed to import apps.tenants",
            id="audit imports tenants inside a function",
        ),
        pytest.param(
            "apps/keystores/software.py",
            "import apps.keychain.models  # noqa\n",
            "apps.keystores is not allowed to import apps.keychain",
            id="keystores imports keychain",
        ),
        pytest.param(
            "apps/keychain/views.py",
            "from apps.rotation.services import rotation_start  # noqa\n",
            "apps.keychain is not allowed to import apps.rotation",
            id="an edge imports a higher layer",
        ),
    ],
)
def test_an_import_of_a_higher_layer_breaks_the_contract(
    tree_copy: Path, module: str, code: str, broken: str
) -> None:
    with open(tree_copy / module, "a") as source:
        source.write("\n\n" + code)
    result = _lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACT} BROKEN" in result.stdout
    assert broken in result.stdout
