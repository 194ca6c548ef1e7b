{{/*
Envoy's rendered configuration. files/envoy.yaml is build output: `make gen` renders it from the
one source of Envoy's configuration, gateway-envoy/envoy.yaml.j2 (tools/devstack/envoy.py,
render_chart_template), the same template the local stack renders; what differs per install is
left in it as Helm actions on values.yaml (envoy.*, config.jwt.*, ports.*, <service>.enabled).
*/}}
{{- define "pg.envoyConfig" -}}
{{- tpl (.Files.Get "files/envoy.yaml" | required "files/envoy.yaml is missing: run `make gen` (it renders Envoy's configuration from gateway-envoy/envoy.yaml.j2)") . -}}
{{- end -}}

{{/*
Written by Envoy's init container from the app image: the JWKS derived from JWT_SECRET (so an
existingSecret needs only JWT_SECRET), the descriptor set matching the services' protos, and the
OpenAPI description and API docs page Envoy serves at /api/v1/openapi.json and /docs (built with
them by `make gen`).
JWT_SECRET passes the services' rules first (gateway_core.config; no APP_ENV here means
production): an unset, short or published key stops the pod before Envoy trusts it.
*/}}
{{- define "pg.envoyRuntimeScript" -}}
import base64, json, os, shutil
from gateway_core.config import ConfigError, load_settings
try:
    secret = load_settings().secret("jwt_secret").encode()
except ConfigError as exc:
    raise SystemExit(f"envoy: {exc}")
key = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
jwks = {"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}
os.umask(0o027)
with open("/etc/envoy/runtime/jwks.json", "w") as out:
    json.dump(jwks, out)
shutil.copyfile(os.environ["DESCRIPTORS_SOURCE"], "/etc/envoy/runtime/descriptors.pb")
for name in ("openapi.json", "api-docs.html"):
    shutil.copyfile(f"/app/gen/{name}", f"/etc/envoy/runtime/{name}")
print("envoy runtime files written")
{{- end -}}

{{/*
JWT_MAX_LIFETIME's written form (a whole number of s, m or h: 3600s, 90m, 24h) in seconds, as
gateway_core.config.parse_duration reads it. Call with (list <value> <name for errors>).
*/}}
{{- define "pg.durationSeconds" -}}
{{- $raw := index . 0 | toString | trim -}}
{{- if not (regexMatch "^[0-9]+[smh]$" $raw) -}}
{{- fail (printf "%s must be a positive whole number of s, m or h (3600s, 90m, 24h), got %q" (index . 1) $raw) -}}
{{- end -}}
{{- $unit := regexFind "[smh]$" $raw -}}
{{- $seconds := mul (trimSuffix $unit $raw | atoi) (get (dict "s" 1 "m" 60 "h" 3600) $unit) -}}
{{- if not $seconds -}}
{{- fail (printf "%s must be a positive whole number of s, m or h (3600s, 90m, 24h), got %q" (index . 1) $raw) -}}
{{- end -}}
{{- $seconds -}}
{{- end -}}
