"""Calling a calendar API through Nango's proxy: the HTTP shell every Nango-backed provider module shares.

The proxy holds no OAuth token: every call is `{METHOD} {nango}/proxy/{provider path}` with the user's
`Connection-Id`, the integration's `Provider-Config-Key` and the Nango secret key, and Nango injects and
refreshes the user's token. Nango forwards to the provider only the headers named `Nango-Proxy-<Name>`
(without the prefix); its own errors carry a string `error.code`, the provider's are passed through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from proxy.calendar.provider import CalendarError
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret

__all__ = ["NangoProxy", "classify_nango", "json_of"]

logger = logging.getLogger(__name__)

Json = dict[str, Any]
# Nango codes meaning the user's connection is gone or its token refresh failed: the user must reconnect.
_NANGO_RECONNECT_CODES = frozenset({"invalid_credentials", "connection_refresh_backoff", "failed_to_get_connection"})


class NangoProxy:
    """Requests to one provider's API (under `prefix`, e.g. "/calendar/v3") through Nango's proxy."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        nango_base_url: str,
        prefix: str,
        secret_key: Secret,
        integration_id: str,
        timeout: float,
        classify: Callable[[int, object], CalendarError],
        metrics: Metrics | None = None,
        gate: RequestGate | None = None,
        label: str = "calendar",
    ) -> None:
        self._http = http
        self.base = nango_base_url.rstrip("/") + "/proxy" + prefix
        self.secret = secret_key
        self.integration = integration_id
        self._timeout = httpx.Timeout(timeout)
        self._classify = classify
        self._metrics = metrics
        self._label = label  # the metric's operation prefix: which calendar API ("calendar" is Google's)
        # Without a shared gate (tests, tools) the calendar gets its own, bounded the same way.
        self._gate = gate if gate is not None else RequestGate(total_timeout=max(timeout * 2, 1.0))

    async def send(
        self,
        operation: str,
        method: str,
        path: str,
        connection_id: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        budget: float | None = None,
    ) -> httpx.Response:
        """One request; CalendarError("timeout"/"unavailable") when no answer comes, else the response as is."""
        sent = {
            **(headers or {}),
            "Authorization": f"Bearer {self.secret}",
            "Connection-Id": connection_id,
            "Provider-Config-Key": self.integration,
        }
        try:
            async with self._gate.turn(budget):
                return await self._http.request(
                    method, self.base + path, headers=sent, json=json, params=tuple(params), timeout=self._timeout
                )
        except (httpx.TimeoutException, TimeoutError):
            self.count(operation, "timeout")
            raise CalendarError("timeout", f"{operation}: no answer from Nango in time") from None
        except httpx.TransportError as exc:
            self.count(operation, "connection_error")
            raise CalendarError("unavailable", f"{operation}: cannot reach Nango ({type(exc).__name__})") from None

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        connection_id: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        budget: float | None = None,
    ) -> Json:
        """One request whose success is a JSON object (an empty one for no body); failures as CalendarError."""
        response = await self.send(
            operation, method, path, connection_id, json=json, params=params, headers=headers, budget=budget
        )
        body = json_of(response)
        if response.is_success:
            self.count(operation, "ok")
            return body if isinstance(body, dict) else {}
        raise self.failure(operation, response.status_code, body)

    def failure(self, operation: str, status: int, body: object) -> CalendarError:
        """The CalendarError for an error answer, counted and logged without the secret."""
        error = self._classify(status, body)
        self.count(operation, error.kind)
        detail = error.detail.replace(str(self.secret), "**********") if self.secret else error.detail
        logger.debug("calendar %s failed: %s %s", operation, error.kind, detail)
        return CalendarError(error.kind, f"{operation}: {detail}", status=error.status)

    def count(self, operation: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.nango_requests.labels(operation=f"{self._label}_{operation}", result=result).inc()


def nango_code(body: object) -> str | None:
    """Nango's own `error.code` (a string; a provider's passed-through error has another shape)."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def classify_nango(status: int, body: object, product: str) -> CalendarError | None:
    """The CalendarError for an error Nango made itself, None for one the provider made."""
    code = nango_code(body)
    if code is None:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message") or "")[:200] if isinstance(error, dict) else ""
    detail = f"Nango answered {status} {code}: {message}"
    # Nango reports a missing connection (400) and a failed token refresh (424) as `server_error` 4xx.
    if code in _NANGO_RECONNECT_CODES or status == 424 or (code == "server_error" and status < 500):
        return CalendarError("auth", detail + f"; the user must reconnect their {product}", status=status)
    if status in (401, 403):
        # Nango refusing our own secret key: reconnecting would not help, the operator must fix the key.
        return CalendarError("unavailable", detail + "; check the Nango secret key and its scopes", status=status)
    if code == "unknown_provider_config":
        return CalendarError("invalid", detail + "; check the Nango integration id", status=status)
    if status in (400, 422):
        return CalendarError("invalid", detail, status=status)
    return CalendarError("unavailable", detail, status=status)


def status_error(status: int, detail: str, product: str) -> CalendarError:
    """The CalendarError for an error the calendar API made, by its HTTP status alone (after the API's own
    codes, which each provider reads first)."""
    if status in (401, 403):
        return CalendarError("auth", detail + f"; the user must reconnect their {product}", status=status)
    if status in (404, 410):
        return CalendarError("not_found", detail, status=status)
    if status in (409, 412):
        return CalendarError("conflict", detail, status=status)
    if status in (400, 422):
        return CalendarError("invalid", detail, status=status)
    return CalendarError("unavailable", detail, status=status)


def json_of(response: httpx.Response) -> object:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
