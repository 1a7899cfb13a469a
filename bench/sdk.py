"""The client side of L4: kcm_client and the kcm command line against a live KCM.

    python -m bench.sdk          # BENCH_SDK_MESSAGES (default 10000), BENCH_SDK_GIB (default 1)

- local_vs_raw: SDK encrypt of 4 KiB messages with the default data-key cache, against a bare
  `cryptography` AES-GCM loop over the same data (throughput ratio, median of short rounds run
  alternately; target >= 0.5), and the same ratio over all rounds, data-key fetches included;
- stream_vs_openssl: `kcm encrypt` of a 1 GiB file against `openssl enc -aes-256-ctr` of the
  same file (openssl enc refuses AEAD ciphers such as GCM) (target >= 0.5);
- server_calls_per_10k: API calls per 10,000 messages with the default cache (target <= 10).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import deployment, report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "client"))

from kcm_client import Client, DataKeyCache  # noqa: E402

MESSAGES = int(os.environ.get("BENCH_SDK_MESSAGES", "10000"))
GIB = float(os.environ.get("BENCH_SDK_GIB", "1"))
ROUND = 200  # messages per round: 50 rounds of each by default
CONTEXT = {"purpose": "bench"}


def local_figures(client: Client) -> dict[str, float]:
    """Alternate short rounds of SDK encrypts and bare AES-GCM seals (each: one 4 KiB seal
    under a fresh 96-bit nonce from os.urandom). The median round ratio is the local path; the
    few rounds that fetch a new data key from KCM are outliers it ignores, so the ratio of the
    totals (key fetches included, once the first key is cached) is printed beside it."""
    data = os.urandom(4096)
    rounds = max(MESSAGES // ROUND, 1)
    raw = AESGCM(os.urandom(32))
    before = client.server_calls
    client.encrypt(data, service_key="payments", context=CONTEXT)  # connected, a key cached
    sdk_times, raw_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(ROUND):
            client.encrypt(data, service_key="payments", context=CONTEXT)
        sdk_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(ROUND):
            raw.encrypt(os.urandom(12), data, None)
        raw_times.append(time.perf_counter() - started)
    calls = client.server_calls - before
    ratios = [r / s for r, s in zip(raw_times, sdk_times, strict=True)]
    return {
        "local_vs_raw": statistics.median(ratios),
        "with_key_fetches": sum(raw_times) / sum(sdk_times),
        "sdk_us": statistics.median(sdk_times) / ROUND * 1e6,
        "raw_us": statistics.median(raw_times) / ROUND * 1e6,
        "server_calls_per_10k": calls * 10_000 / (ROUND * rounds),
    }


def stream_figures(url: str, host: str, token: str, folder: Path) -> dict[str, float]:
    source = folder / "data.bin"
    block = os.urandom(1 << 20)
    with open(source, "wb") as out:
        for _ in range(int(GIB * 1024)):
            out.write(block)
    env = {**os.environ, "KCM_TOKEN": token, "KCM_CONFIG_DIR": str(folder / "config"),
           "PYTHONPATH": str(REPO / "client")}  # fmt: skip
    kcm = [sys.executable, "-m", "kcm_client"]
    subprocess.run([*kcm, "login", "--url", url, "--host", host], env=env, check=True,
                   capture_output=True)  # fmt: skip
    started = time.perf_counter()
    subprocess.run(
        [*kcm, "encrypt", str(source), "-o", str(folder / "data.kcm"), "-k", "payments",
         "--no-progress"], env=env, check=True, capture_output=True,
    )  # fmt: skip
    cli = time.perf_counter() - started
    (folder / "data.kcm").unlink()
    started = time.perf_counter()
    subprocess.run(
        ["openssl", "enc", "-aes-256-ctr", "-K", os.urandom(32).hex(), "-iv",
         os.urandom(16).hex(), "-in", str(source), "-out", str(folder / "data.ctr")],
        check=True, capture_output=True,
    )  # fmt: skip
    openssl = time.perf_counter() - started
    return {"stream_vs_openssl": openssl / cli, "cli_s": cli, "openssl_s": openssl}


def main() -> None:
    with deployment() as dep:
        url = f"http://127.0.0.1:{dep.stack.port}"
        host = f"{dep.tenant.host}:{dep.stack.port}"
        token = dep.tenant.tokens["key_user"]
        with Client(url, token, host_header=host, cache=DataKeyCache()) as client:
            local = local_figures(client)
        folder = Path(tempfile.mkdtemp(prefix="kcm-bench-sdk-"))
        try:
            stream = stream_figures(url, host, token, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    report(
        [
            f"SDK encrypt of 4 KiB messages, default cache: {local['sdk_us']:.1f} us each; "
            f"bare AES-GCM {local['raw_us']:.1f} us",
            f"  local_vs_raw {local['local_vs_raw']:.3f} (target >= 0.5); "
            f"{local['with_key_fetches']:.3f} counting the data-key fetches",
            f"kcm encrypt of {GIB:g} GiB: {stream['cli_s']:.2f} s; openssl enc -aes-256-ctr "
            f"{stream['openssl_s']:.2f} s",
            f"  stream_vs_openssl {stream['stream_vs_openssl']:.3f} (target >= 0.5)",
            f"API calls per 10,000 messages: {local['server_calls_per_10k']:g} (target <= 10)",
        ],
        {
            "bench": "sdk",
            "local_vs_raw": round(local["local_vs_raw"], 3),
            "local_vs_raw_with_key_fetches": round(local["with_key_fetches"], 3),
            "stream_vs_openssl": round(stream["stream_vs_openssl"], 3),
            "server_calls_per_10k": local["server_calls_per_10k"],
            "sdk_encrypt_4k_us": round(local["sdk_us"], 1),
            "raw_encrypt_4k_us": round(local["raw_us"], 1),
            "cli_encrypt_gib_s": round(stream["cli_s"], 2),
            "openssl_gib_s": round(stream["openssl_s"], 2),
        },
    )


if __name__ == "__main__":
    main()
