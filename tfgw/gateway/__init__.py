"""The gateway: the Quart app, its state, auth and routing."""

from tfgw.gateway.app import create_app

__all__ = ["create_app"]
