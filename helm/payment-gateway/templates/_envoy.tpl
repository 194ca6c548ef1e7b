{{/* Envoy's rendered configuration (files/envoy.yaml is the template). */}}
{{- define "pg.envoyConfig" -}}
{{- tpl (.Files.Get "files/envoy.yaml") . -}}
{{- end -}}

{{/*
Written by Envoy's init container from the app image: the JWKS derived from JWT_SECRET (so an
existingSecret needs only JWT_SECRET) and the descriptor set matching the services' protos.
*/}}
{{- define "pg.envoyRuntimeScript" -}}
import base64, json, os, shutil
secret = os.environ.get("JWT_SECRET", "").encode()
if not secret:
    raise SystemExit("JWT_SECRET is empty: Envoy cannot verify tokens")
key = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
jwks = {"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}
os.umask(0o027)
with open("/etc/envoy/runtime/jwks.json", "w") as out:
    json.dump(jwks, out)
shutil.copyfile(os.environ["DESCRIPTORS_SOURCE"], "/etc/envoy/runtime/descriptors.pb")
print("envoy runtime files written")
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
