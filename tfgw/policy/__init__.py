"""The gateway's policy: what is decided about a request besides where it goes.

Guardrails (`guardrails`), the response cache (`cache`) and the limits and budgets every worker
counts together (`limits`, over the shared table in `counters`). Each is plain, synchronous and in
memory; the gateway's stages (`tfgw.gateway.stages`) call them in a fixed order and put every
decision on the request's trace.
"""
