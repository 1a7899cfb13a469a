"""`kcm` and `python -m kcm_client`: the command line, or how to get it when the package was
installed without its `cli` extra (click and rich)."""

import sys


def run() -> None:
    try:
        from .cli import main
    except ModuleNotFoundError as missing:
        if missing.name not in ("click", "rich"):
            raise
        sys.exit(
            f"kcm: the command line needs {missing.name}: pip install 'kcm-client[cli]' "
            "(the SDK alone needs only httpx and cryptography)"
        )
    main(prog_name="kcm")


if __name__ == "__main__":
    run()
