"""NATS JetStream, `[bus] kind = "nats"` (docs/bus.md): `connect` (the one way to connect),
`stream` (the stream, made when missing), `publish` (a gateway's trace log onto the stream),
`consume` (the export targets' consumers), `live` (`tfgw traces tail|top --nats`)."""
