{{/*
The services of the mesh: libs/gateway_core/services.py, the one registry (name, module,
address variable, gRPC services, public or not, schema, callers, plain HTTP listener), as
files/topology.json, which `make gen` writes from it (tools/chart_topology.py) and git never
holds. Per service:
  key      its block in values.yaml
  schema   its PostgreSQL schema (services that keep data): its pods log in as the role
           config.db.roles.<schema> with the Secret's DB_<SCHEMA>_PASSWORD
  callers  the only components allowed to open connections to it (NetworkPolicy ingress; the
           callers' egress follows from the same list)
  httpPort the name (in .Values.ports) of the plain HTTP listener it also serves, if any: the
           webhook service's status stream, the web service's pages
Read it with: include "pg.registry" . | fromYamlArray
*/}}
{{- define "pg.registry" -}}
{{- .Files.Get "files/topology.json" | required "files/topology.json is missing: run `make gen` (it writes the service topology from libs/gateway_core/services.py)" -}}
{{- end -}}
