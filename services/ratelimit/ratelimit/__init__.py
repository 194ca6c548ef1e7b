"""Envoy's global rate limit service (envoy.service.ratelimit.v3) on Redis fixed windows."""
