"""The settings sections of the routing file (`server`, `auth`, `nango`, `redis`): typed models that are also
the settings objects the code reads (`proxy.vapi.auth`, `proxy.nango.client`, `proxy.shared` and the server import them
from here).

Each default and bound is written once, here; `proxy.config.models` puts them in the file's model.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field
from msgspec.structs import force_setattr

from proxy.config.providers import ProviderKind, kind_of_provider
from proxy.secret import Secret

__all__ = [
    "HMAC_PLACEHOLDERS",
    "Addresses",
    "AuthSection",
    "AuthSettings",
    "BearerPlan",
    "HmacPlan",
    "Integration",
    "Model",
    "NangoSettings",
    "Secrets",
    "ServerSettings",
    "TagRouting",
    "doc",
]

HMAC_PLACEHOLDERS = frozenset({"body", "timestamp", "method", "url"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def doc(text: str, **bounds: Any) -> Meta:
    return Meta(description=text, **bounds)


class Secrets(tuple[Secret, ...]):
    """Secret values: a string or a list of strings in YAML. Empty values (an unset `${VAR:-}`) are
    dropped, so they disable that secret rather than accept an empty header."""

    __slots__ = ()


class Addresses(tuple[str, ...]):
    """IP addresses or networks (or "*"), exactly as uvicorn reads them: a string or a list in YAML."""

    __slots__ = ()


class Model(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A section of the routing file: unknown keys are errors."""


def _positive_text(value: str, name: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


# -- server -----------------------------------------------------------------------------------


class ServerSettings(Model, frozen=True, kw_only=True):
    path: Annotated[str, doc("where Vapi POSTs (the server URL's path)", pattern="^/")] = "/vapi"
    webhook_path: Annotated[str, doc("where Nango POSTs its webhooks", pattern="^/")] = "/nango/webhook"
    public_url: Annotated[
        Annotated[str, Meta(pattern="^https?://")] | None,
        doc(
            "the proxy's public base URL: used for the proxy-mode tool server URL and for HMAC payloads that sign {url}"
        ),
    ] = None
    max_body_bytes: Annotated[int, doc("larger bodies get 413", ge=1024, le=64 * 1_048_576)] = 1_048_576
    deadline_seconds: Annotated[
        float, doc("budget for a whole assistant-request; Vapi drops the call at 7.5 s", ge=0.1, le=7.0)
    ] = 4.0
    drain_seconds: Annotated[float, doc("on shutdown, how long in-flight requests may take", ge=0.0, le=300.0)] = 10.0
    shutdown_delay_seconds: Annotated[
        float, doc("on SIGTERM, how long /readyz answers 503 before the listener closes", ge=0.0, le=60.0)
    ] = 2.0
    reload_poll_seconds: Annotated[
        float, doc("how often the config file is checked for changes; 0: only on SIGHUP", ge=0.0, le=3600.0)
    ] = 1.0
    # Connection limits (proxy/http/connections.py), read once at start-up; docs/kubernetes.md says why these numbers.
    max_header_bytes: Annotated[int, doc("request line plus headers above this get 431", ge=1024, le=1_048_576)] = (
        16_384
    )
    header_timeout_seconds: Annotated[float, doc("time to receive the headers (408)", ge=0.1, le=300.0)] = 5.0
    body_timeout_seconds: Annotated[float, doc("time to receive the body (408)", ge=0.1, le=300.0)] = 10.0
    send_timeout_seconds: Annotated[
        float, doc("a client that reads none of its answers for this long is cut off", ge=0.1, le=300.0)
    ] = 10.0
    keepalive_timeout_seconds: Annotated[float, doc("idle keep-alive connections close after", ge=0.1, le=3600.0)] = 5.0
    max_connections: Annotated[int, doc("concurrent connections; more are refused with 503", ge=1, le=1_000_000)] = 1000
    max_connections_per_address: Annotated[
        int,
        doc("concurrent connections from one address (IPv6: one /64), forwarded_allow_ips exempt", ge=1, le=1_000_000),
    ] = 250
    max_unauthenticated_body_reads: Annotated[
        int, doc("bodies read before authentication (HMAC, webhooks) at once; more get 503", ge=1, le=100_000)
    ] = 32
    max_tool_calls: Annotated[
        int, doc("tool calls answered per message; each one beyond gets its own speakable error", ge=1, le=128)
    ] = 16
    forwarded_allow_ips: Annotated[
        Addresses,
        doc('peers whose X-Forwarded-For/-Proto are believed: addresses or networks, or "*" for any (not advised)'),
    ] = Addresses()

    def __post_init__(self) -> None:
        if self.public_url is not None:
            force_setattr(self, "public_url", self.public_url.rstrip("/") or None)


# -- auth -------------------------------------------------------------------------------------


def _check_secrets(name: str, secrets: object) -> None:
    if not isinstance(secrets, tuple | list):  # a plain str would print itself in a repr
        raise TypeError(f"{name} must be a tuple of Secret")
    for index, secret in enumerate(secrets):
        if not isinstance(secret, Secret):
            raise TypeError(f"{name}[{index}] must be a Secret, not {type(secret).__name__}")
        if not secret:  # an empty one would match an empty header
            raise ValueError(f"{name}[{index}] is empty")
        try:
            str(secret).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name}[{index}] is not valid text") from None


class BearerPlan(Model, frozen=True, kw_only=True):
    """Vapi's bearer credential: a token in `header`, after "Bearer " unless `prefix` is off."""

    tokens: Annotated[Secrets, doc("accepted bearer tokens")] = Secrets()
    header: Annotated[str, doc("header carrying the token", min_length=1)] = "authorization"
    prefix_enabled: Annotated[bool, doc("expect `Bearer <token>` rather than the bare token")] = field(
        default=True, name="prefix"
    )

    def __post_init__(self) -> None:
        _check_secrets("tokens", self.tokens)
        _positive_text(self.header, "header")
        force_setattr(self, "tokens", Secrets(self.tokens))
        force_setattr(self, "header", self.header.lower())


class HmacPlan(Model, frozen=True, kw_only=True):
    """Vapi's HMAC credential: a signature over `payload_format`, optionally bound to a fresh timestamp."""

    secrets: Annotated[Secrets, doc("HMAC keys")] = Secrets()
    algorithm: Annotated[Literal["sha256", "sha512", "sha1"], doc("digest algorithm")] = "sha256"
    signature_header: Annotated[str, doc("header with the signature", min_length=1)] = "x-signature"
    timestamp_header: Annotated[str | None, doc("header with the timestamp (seconds or milliseconds); empty: none")] = (
        "x-timestamp"
    )
    signature_prefix: Annotated[str, doc("e.g. `sha256=`")] = ""
    include_timestamp: Annotated[bool, doc("require a fresh timestamp header")] = True
    payload_format: Annotated[
        str, doc("what is signed; placeholders {body} (raw bytes), {timestamp}, {method}, {url}")
    ] = "{timestamp}.{body}"
    encoding: Annotated[Literal["hex", "base64"], doc("signature encoding")] = "hex"
    secret_is_base64: Annotated[bool, doc("decode the key from base64 first")] = False
    tolerance_seconds: Annotated[float, doc("accepted clock skew / replay window", ge=1.0, le=3600.0)] = 300.0

    def __post_init__(self) -> None:
        _check_secrets("secrets", self.secrets)
        force_setattr(self, "secrets", Secrets(self.secrets))
        force_setattr(self, "signature_header", self.signature_header.lower())
        force_setattr(self, "timestamp_header", (self.timestamp_header or "").lower() or None)
        if self.algorithm not in ("sha256", "sha512", "sha1"):
            raise ValueError("algorithm must be one of sha1, sha256, sha512")
        if self.encoding not in ("hex", "base64"):
            raise ValueError("encoding must be 'hex' or 'base64'")
        _positive_text(self.signature_header, "signature_header")
        if self.include_timestamp and not self.timestamp_header:
            raise ValueError("include_timestamp needs a timestamp_header")
        if not (math.isfinite(self.tolerance_seconds) and self.tolerance_seconds > 0):
            raise ValueError("tolerance_seconds must be a positive number")
        # A typo such as "{timestmp}" would otherwise fail every request at run time, silently.
        unknown = set(_PLACEHOLDER.findall(self.payload_format)) - HMAC_PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"payload_format has unknown placeholders {sorted(unknown)}; known: {sorted(HMAC_PLACEHOLDERS)}"
            )
        for index, secret in enumerate(self.secrets):
            if self.secret_is_base64 and not _is_base64(str(secret)):
                raise ValueError(f"secrets[{index}] is not valid base64")


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text.encode("utf-8", "surrogatepass"), validate=True))
    except (binascii.Error, ValueError):
        return False


class AuthSection(Model, frozen=True, kw_only=True):
    vapi_secrets: Annotated[Secrets, doc("accepted X-Vapi-Secret values (a string or a list)")] = Secrets()
    bearer: Annotated[BearerPlan | None, doc("Vapi bearer-token credential")] = None
    hmac: Annotated[HmacPlan | None, doc("Vapi HMAC credential")] = None


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every way a request may authenticate; any one that succeeds is enough. Built from `AuthSection`."""

    shared_secrets: tuple[Secret, ...] = ()
    bearer: BearerPlan | None = None
    hmac: HmacPlan | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        _check_secrets("shared_secrets", self.shared_secrets)
        force_setattr(self, "shared_secrets", tuple(self.shared_secrets))

    @property
    def configured(self) -> bool:
        """True if at least one method has at least one secret."""
        return bool(self.shared_secrets or (self.bearer and self.bearer.tokens) or (self.hmac and self.hmac.secrets))


# -- nango ------------------------------------------------------------------------------------


class TagRouting(Model, frozen=True, kw_only=True):
    """Which tag keys carry routing (`nango.tag_routing`). Each key is a lowercase Nango tag key or None;
    at least one of number_tag and phone_number_id_tag is set (checked in `proxy.config.checks`)."""

    number_tag: Annotated[str | None, doc("tag key holding the user's Vapi number (E.164)")] = None
    phone_number_id_tag: Annotated[str | None, doc("tag key holding the user's Vapi phone-number id")] = None
    template_tag: Annotated[str | None, doc("tag key naming the template for the user's calls")] = None
    name_tag: Annotated[str | None, doc("tag key holding the user's display name")] = None
    timezone_tag: Annotated[str | None, doc("tag key holding the user's IANA timezone")] = None
    negative_ttl: Annotated[
        float, doc('how long "no connection claims this line" is remembered before Nango is asked again', ge=0, le=300)
    ] = field(default=5.0, name="negative_ttl_seconds")

    @property
    def keys(self) -> Iterator[tuple[str, str]]:
        """(role, tag key) for every configured key."""
        for role in ("number", "phone_number_id", "template", "name", "timezone"):
            key: str | None = getattr(self, f"{role}_tag")
            if key is not None:
                yield role, key


class Integration(Model, frozen=True, kw_only=True):
    """One Nango integration users connect their calendar through, and the calendar API behind it."""

    id: Annotated[str, doc("the integration's unique key in Nango", min_length=1)]
    provider: Annotated[
        ProviderKind,
        doc("google (Google Calendar) or microsoft (Microsoft 365 / Outlook, through Microsoft Graph)"),
    ] = "google"


class NangoSettings(Model, frozen=True, kw_only=True):
    base_url: Annotated[str, doc("self-hosted Nango: your URL", pattern="^https?://")] = "https://api.nango.dev"
    secret_key: Annotated[
        Secret | None,
        doc("Nango secret key (${NANGO_SECRET_KEY}); empty: no Nango, only fixed connection_ids in native mode"),
    ] = None
    integration_id: Annotated[str, doc("the integration's unique key in Nango", min_length=1)] = "google-calendar"
    user_tag: Annotated[str, doc("the connection tag holding your user id", min_length=1)] = "end_user_id"
    legacy_end_user_id_lookup: Annotated[
        bool, doc("also try Nango's deprecated endUserId= filter when the tag finds nothing")
    ] = False
    connect_timeout: Annotated[float, doc("seconds, per Nango request", ge=0.05, le=7.0)] = 1.0
    read_timeout: Annotated[float, doc("seconds, per Nango request", ge=0.05, le=7.0)] = 2.5
    cache_ttl: Annotated[float, doc("how long a found connection id is reused before asking again", ge=1.0)] = field(
        default=300.0, name="cache_ttl_seconds"
    )
    negative_ttl: Annotated[float, doc('how long "this user has no connection" is remembered', ge=0.0)] = field(
        default=30.0, name="negative_ttl_seconds"
    )
    cache_max_size: Annotated[int, doc("bound of each cache", ge=1)] = 100_000
    index_refresh_interval: Annotated[
        float, doc("how often the whole user -> connection index is rebuilt; 0 disables the index", ge=0.0)
    ] = field(default=300.0, name="index_refresh_seconds")
    index_page_size: Annotated[int, doc("connections per page while indexing (Nango's maximum)", ge=1, le=2000)] = 2000
    webhook_signing_keys: Annotated[
        Secrets, doc("keys for X-Nango-Hmac-Sha256 (current and previous during a rotation); the secret key when empty")
    ] = Secrets()

    tag_routing: Annotated[TagRouting | None, doc("which Nango connection tags route calls (opt-in)")] = None
    integrations: Annotated[
        tuple[Integration, ...],
        doc(
            "the Nango integrations users connect through, each with its provider kind; a user's connection is "
            "looked for in all of them. Unset: integration_id alone, a Google one"
        ),
    ] = ()

    def integration_ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.integrations) or (self.integration_id,)

    def kind_of(self, integration: str, provider: str | None = None) -> ProviderKind:
        """A connection's calendar API: Nango's provider name decides when it is a known one, else the kind
        configured for its integration, else Google (the one integration of a config without `integrations`)."""
        known = kind_of_provider(provider)
        if known is not None:
            return known
        return next((i.provider for i in self.integrations if i.id == integration), "google")

    def has_microsoft(self) -> bool:
        return any(i.provider == "microsoft" for i in self.integrations)

    def __post_init__(self) -> None:
        force_setattr(self, "base_url", self.base_url.rstrip("/"))
        ids = [i.id for i in self.integrations]
        if len(set(ids)) != len(ids):
            raise ValueError("integrations: each id may appear once")
        if ids and self.integration_id not in ids:
            # `integration_id` stays the default one (connect links, onboarding): the first listed.
            force_setattr(self, "integration_id", ids[0])
        if self.secret_key is not None and not self.secret_key:
            force_setattr(self, "secret_key", None)
        force_setattr(self, "webhook_signing_keys", Secrets(self.webhook_signing_keys))
