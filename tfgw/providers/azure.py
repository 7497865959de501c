"""Azure OpenAI: OpenAI's wire format at deployment URLs, with an `api-key` header.

`base_url` is the resource (`https://NAME.openai.azure.com`); a target's `model` is the deployment
name; requests go to `{base_url}/openai/deployments/{deployment}/{endpoint}?api-version=...`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tfgw.providers.base import Call
from tfgw.providers.http import HttpClient
from tfgw.providers.openai import OpenAIProvider

__all__ = ["AzureProvider"]


class AzureProvider(OpenAIProvider):
    def __init__(self, settings, client: HttpClient) -> None:
        super().__init__(settings, client)
        self.headers = {
            "content-type": "application/json",
            **({"api-key": settings.api_key} if settings.api_key else {}),
            **settings.headers,
        }

    def url(self, call: Call, endpoint: str) -> str:
        deployment = quote(call.model, safe="")
        return (
            f"{self.settings.base_url}/openai/deployments/{deployment}/{endpoint}"
            f"?api-version={self.settings.api_version}"
        )

    def upstream_body(self, call: Call) -> dict[str, Any]:
        # the deployment is in the URL; Azure ignores `model`, so the client's body goes as it is
        return dict(call.body)
