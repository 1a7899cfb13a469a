"""The key admin's and auditor's calls the `kcm` command line needs: keys, rotation jobs and
audit exports. Thin wrappers over the API (README, "API"); the answers are the API's JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .http import Transport


class AdminMixin:
    api: Transport

    def keys(self) -> list[dict[str, Any]]:
        """The key chain: L1 trees with their L2s and L3s."""
        results: list[dict[str, Any]] = self.api.request("GET", "/api/v1/keys/")["results"]
        return results

    def service_keys(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.api.request("GET", "/api/v1/service-keys/")["results"]
        return results

    def service_key(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.request("GET", f"/api/v1/service-keys/{name}/")
        return found

    def create_customer_key(self, name: str, description: str = "") -> dict[str, Any]:
        body = {"name": name, "description": description}
        created: dict[str, Any] = self.api.request("POST", "/api/v1/customer-keys/", body)
        return created

    def create_service_key(
        self, name: str, *, customer_key_id: str | None = None, description: str = ""
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "description": description}
        if customer_key_id:
            body["customer_key_id"] = customer_key_id
        created: dict[str, Any] = self.api.request("POST", "/api/v1/service-keys/", body)
        return created

    def key_action(self, key_id: str, action: str) -> dict[str, Any]:
        """enable, disable, cancel-deletion or rotate (which queues a rewrap job)."""
        done: dict[str, Any] = self.api.request("POST", f"/api/v1/keys/{key_id}/{action}/", {})
        return done

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.request("GET", f"/api/v1/rotation/jobs/{job_id}/")
        return found

    def audit_verify(self) -> dict[str, Any]:
        verdict: dict[str, Any] = self.api.request("GET", "/api/v1/audit/verify/")
        return verdict

    def audit_export_start(self, fmt: str, **filters: str) -> dict[str, Any]:
        body = {"format": fmt, **{k: v for k, v in filters.items() if v}}
        job: dict[str, Any] = self.api.request("POST", "/api/v1/audit/exports/", body)
        return job

    def audit_export(self, export_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.api.request("GET", f"/api/v1/audit/exports/{export_id}/")
        return job

    def audit_export_download(self, export_id: str) -> Iterator[bytes]:
        response = self.api.download(f"/api/v1/audit/exports/{export_id}/download/")
        yield from response.iter_bytes()

    def audit_export_manifest(self, export_id: str) -> dict[str, Any]:
        path = f"/api/v1/audit/exports/{export_id}/manifest/"
        manifest: dict[str, Any] = self.api.request("GET", path)
        return manifest
