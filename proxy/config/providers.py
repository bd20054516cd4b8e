"""Which calendar service a Nango connection is: its provider kind, from Nango's provider name.

A connection's `provider` field is the name of a provider in Nango's catalogue (providers.yaml, shipped in the
npm package `@nangohq/providers`). The ones below are the catalogue's OAuth providers whose proxy base URL is
a calendar API the proxy speaks: `https://www.googleapis.com` (Google Calendar v3) or
`https://graph.microsoft.com` (Microsoft Graph, delegated: `/me` is the signed-in user). Providers with an
app-only token (`microsoft-oauth2-cc`, Google service accounts) have no `/me` and are not listed; nor are
Google's and Microsoft's other products (Drive, Teams, ...), whose scopes grant no calendar.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["PROVIDER_KINDS", "ProviderKind", "kind_of_provider"]

ProviderKind = Literal["google", "microsoft"]

PROVIDER_KINDS: dict[str, ProviderKind] = {
    # base_url https://www.googleapis.com
    "google-calendar": "google",
    "google": "google",
    # base_url https://graph.microsoft.com (`outlook` is an alias of `microsoft` in providers.yaml)
    "microsoft": "microsoft",
    "microsoft-admin": "microsoft",
    "microsoft-tenant-specific": "microsoft",
    "outlook": "microsoft",
}


def kind_of_provider(provider: str | None) -> ProviderKind | None:
    """The kind of a Nango provider name; None for a name not listed (the integration's configured kind holds)."""
    return PROVIDER_KINDS.get(provider) if provider else None
