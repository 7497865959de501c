"""Provider adapters, one module per wire format, built from the config by `build_providers`."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from tfgw.config import ProviderSettings
from tfgw.providers.anthropic import AnthropicProvider
from tfgw.providers.azure import AzureProvider
from tfgw.providers.base import Call, Provider, Reply, Stream
from tfgw.providers.http import HttpClient, create_session
from tfgw.providers.mock import MockProvider
from tfgw.providers.openai import OpenAIProvider

__all__ = ["Call", "Provider", "Reply", "Stream", "build_providers", "create_session"]


def build_providers(
    settings: Mapping[str, ProviderSettings], session: aiohttp.ClientSession, secrets: tuple[str, ...]
) -> dict[str, Provider]:
    """One adapter per configured provider, all sharing one HTTP session. Every provider's client
    scrubs all configured secrets from error bodies, not only its own. A `recorded` provider is
    built last, with the provider its `on_miss = "forward:NAME"` names."""
    providers: dict[str, Provider] = {}
    for name, ps in settings.items():
        if ps.kind == "recorded":
            continue
        if ps.kind == "mock":
            providers[name] = MockProvider(ps)
            continue
        client = HttpClient(session, name, secrets)
        kind = {"openai": OpenAIProvider, "azure": AzureProvider, "anthropic": AnthropicProvider}[ps.kind]
        providers[name] = kind(ps, client)
    for name, ps in settings.items():
        if ps.kind == "recorded":
            # imported here: the recorded provider reads the client formats, which import this package
            from tfgw.providers.recorded import RecordedProvider

            forward = providers.get(ps.on_miss.removeprefix("forward:")) if ps.on_miss != "error" else None
            providers[name] = RecordedProvider(ps, forward=forward)
    return providers
