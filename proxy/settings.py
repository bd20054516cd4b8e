"""Readers for the infrastructure sections of the config: `server`, `auth`, `nango`.

Each is a pure function of its YAML section; problems are recorded on the section, located.
"""

from __future__ import annotations

import ipaddress

from proxy.auth import AuthSettings, BearerPlan, HmacPlan
from proxy.nango import NangoSettings
from proxy.schema import Section
from proxy.secret import Secret
from proxy.snapshot import ServerSettings
from proxy.tags import TagRouting, tag_key_problem


def read_server(s: Section) -> ServerSettings:
    path = s.text("path", "/vapi")
    webhook_path = s.text("webhook_path", "/nango/webhook")
    for key, value in (("path", path), ("webhook_path", webhook_path)):
        if not value.startswith("/"):
            s.error(s.at(key), "must start with /")
    public_url = s.optional_str("public_url")
    if public_url is not None and not public_url.startswith(("https://", "http://")):
        s.error(s.at("public_url"), "must be an http(s) URL")
    settings = ServerSettings(
        path=path,
        webhook_path=webhook_path,
        public_url=public_url.rstrip("/") if public_url else None,
        max_body_bytes=s.integer("max_body_bytes", 1_048_576, minimum=1024, maximum=64 * 1_048_576),
        deadline_seconds=s.number("deadline_seconds", 4.0, minimum=0.1, maximum=7.0),
        drain_seconds=s.number("drain_seconds", 10.0, minimum=0.0, maximum=300.0),
        shutdown_delay_seconds=s.number("shutdown_delay_seconds", 2.0, minimum=0.0, maximum=60.0),
        reload_poll_seconds=s.number("reload_poll_seconds", 1.0, minimum=0.0, maximum=3600.0),
        max_header_bytes=s.integer("max_header_bytes", 16_384, minimum=1024, maximum=1_048_576),
        header_timeout_seconds=s.number("header_timeout_seconds", 5.0, minimum=0.1, maximum=300.0),
        body_timeout_seconds=s.number("body_timeout_seconds", 10.0, minimum=0.1, maximum=300.0),
        keepalive_timeout_seconds=s.number("keepalive_timeout_seconds", 5.0, minimum=0.1, maximum=3600.0),
        max_connections=s.integer("max_connections", 1000, minimum=1, maximum=1_000_000),
        max_unauthenticated_body_reads=s.integer("max_unauthenticated_body_reads", 32, minimum=1, maximum=100_000),
        forwarded_allow_ips=_forwarded_allow_ips(s),
        max_tool_calls=s.integer("max_tool_calls", 16, minimum=1, maximum=128),
    )
    s.finish()
    return settings


def _forwarded_allow_ips(s: Section) -> tuple[str, ...]:
    """Peers whose X-Forwarded-For/-Proto are believed: addresses or networks, or "*" for any (not advised)."""
    allowed: list[str] = []
    for path, value in s.str_list("forwarded_allow_ips"):
        value = value.strip()
        if value != "*":
            try:
                # Exactly as uvicorn reads them: a network with host bits set would silently be a literal there.
                ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
            except ValueError:
                s.error(path, f"must be an IP address or network (e.g. 10.0.0.0/8) or *, got {value!r}")
                continue
        allowed.append(value)
    return tuple(allowed)


def read_auth(s: Section) -> AuthSettings:
    shared = s.secrets("vapi_secrets")
    bearer: BearerPlan | None = None
    if s.has("bearer"):
        b = s.section("bearer")
        bearer = BearerPlan(
            tokens=b.secrets("tokens"),
            header=b.text("header", "authorization").lower(),
            prefix_enabled=b.flag("prefix", True),
        )
        b.finish()
    hmac_plan: HmacPlan | None = None
    if s.has("hmac"):
        h = s.section("hmac")
        algorithm = h.text("algorithm", "sha256")
        encoding = h.text("encoding", "hex")
        h.choice("algorithm", algorithm, ("sha256", "sha512", "sha1"))
        h.choice("encoding", encoding, ("hex", "base64"))
        hmac_plan = _hmac_plan(
            h,
            dict(
                secrets=h.secrets("secrets"),
                algorithm=algorithm,
                signature_header=h.text("signature_header", "x-signature").lower(),
                timestamp_header=(h.text("timestamp_header", "x-timestamp").lower() or None),
                signature_prefix=h.text("signature_prefix", ""),
                include_timestamp=h.flag("include_timestamp", True),
                payload_format=h.text("payload_format", "{timestamp}.{body}"),
                encoding=encoding,
                secret_is_base64=h.flag("secret_is_base64", False),
                tolerance_seconds=h.number("tolerance_seconds", 300.0, minimum=1.0, maximum=3600.0),
            ),
        )
        h.finish()
    s.finish()
    return AuthSettings(shared_secrets=shared, bearer=bearer, hmac=hmac_plan)


def _hmac_plan(s: Section, fields: dict[str, object]) -> HmacPlan | None:
    if not fields["secrets"]:
        return None
    try:
        return HmacPlan(**fields)  # type: ignore[arg-type]
    except ValueError as exc:  # e.g. a secret_is_base64 key that is not base64; never the value itself
        s.error(s.path, str(exc))
        return None


def read_nango(s: Section) -> NangoSettings:
    secret = s.text("secret_key")
    settings = NangoSettings(
        base_url=s.text("base_url", "https://api.nango.dev").rstrip("/"),
        secret_key=Secret(secret) if secret else None,
        integration_id=s.text("integration_id", "google-calendar"),
        user_tag=s.text("user_tag", "end_user_id"),
        legacy_end_user_id_lookup=s.flag("legacy_end_user_id_lookup", False),
        connect_timeout=s.number("connect_timeout", 1.0, minimum=0.05, maximum=7.0),
        read_timeout=s.number("read_timeout", 2.5, minimum=0.05, maximum=7.0),
        cache_ttl=s.number("cache_ttl_seconds", 300.0, minimum=1.0),
        negative_ttl=s.number("negative_ttl_seconds", 30.0, minimum=0.0),
        cache_max_size=s.integer("cache_max_size", 100_000, minimum=1),
        index_refresh_interval=s.number("index_refresh_seconds", 300.0, minimum=0.0),
        index_page_size=s.integer("index_page_size", 2000, minimum=1, maximum=2000),
        webhook_signing_keys=s.secrets("webhook_signing_keys"),
        tag_routing=read_tag_routing(s.section("tag_routing")) if s.has("tag_routing") else None,
    )
    s.finish()
    return settings


def read_tag_routing(s: Section) -> TagRouting:
    """`nango.tag_routing`: which connection tags carry a user's Vapi line (opt-in)."""
    keys: dict[str, str | None] = {}
    for role in ("number", "phone_number_id", "template", "name", "timezone"):
        key = s.optional_str(f"{role}_tag")
        if key is not None and (problem := tag_key_problem(key)) is not None:
            s.error(s.at(f"{role}_tag"), problem)
        keys[f"{role}_tag"] = key
    if keys["number_tag"] is None and keys["phone_number_id_tag"] is None:
        s.error(s.path, "set number_tag or phone_number_id_tag (the tag keys that carry a user's Vapi line)")
    routing = TagRouting(
        **keys,
        negative_ttl=s.number("negative_ttl_seconds", 5.0, minimum=0.0, maximum=300.0),
    )
    s.finish()
    return routing
