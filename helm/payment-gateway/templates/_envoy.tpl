{{/* Envoy's rendered configuration (files/envoy.yaml is the template). */}}
{{- define "pg.envoyConfig" -}}
{{- tpl (.Files.Get "files/envoy.yaml") . -}}
{{- end -}}

{{/*
Written by Envoy's init container from the app image: the JWKS derived from JWT_SECRET (so an
existingSecret needs only JWT_SECRET) and the descriptor set matching the services' protos.
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

{{/* Fragments of files/envoy.yaml, the counterparts of the local template's macros. */}}
{{- define "pg.envoy.restClient" -}}
{or_filter: {filters: [{header_filter: {header: {name: content-type, string_match: {prefix: application/grpc}, invert_match: true, treat_missing_header_as_empty: true}}}, {header_filter: {header: {name: x-envoy-original-path, present_match: true}}}]}}
{{- end -}}

{{- define "pg.envoy.jwtRejected" -}}
{extension_filter: {name: envoy.access_loggers.extension_filters.cel, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter, expression: "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')"}}}
{{- end -}}

{{- define "pg.envoy.pathPrefix" -}}
{url_path: {path: {prefix: {{ . | quote }}}}}
{{- end -}}

{{/* (list <jwt metadata key> <role>) */}}
{{- define "pg.envoy.roleIs" -}}
{sourced_metadata: {metadata_source: DYNAMIC, metadata_matcher: {filter: envoy.filters.http.jwt_authn, path: [{key: {{ index . 0 | quote }}}, {key: role}], value: {string_match: {exact: {{ index . 1 | quote }}}}}}}
{{- end -}}
