{{/*
Names, labels and shared fragments.
*/}}

{{- define "pg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Name of one component's objects: <fullname>-<component>. The full name is shortened so that
the result, and the result plus "-headless", stays a valid 63-character DNS label.
Call with (dict "root" $ "component" "orchestrator").
*/}}
{{- define "pg.componentName" -}}
{{- $room := sub 53 (len .component) | int -}}
{{- printf "%s-%s" (include "pg.fullname" .root | trunc $room | trimSuffix "-") .component -}}
{{- end -}}

{{- define "pg.chartLabel" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component. (dict "root" $ "component" name) */}}
{{- define "pg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pg.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every pod of this release (the default-deny NetworkPolicy selects these). */}}
{{- define "pg.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Full labels of one component's objects. (dict "root" $ "component" name) */}}
{{- define "pg.labels" -}}
helm.sh/chart: {{ include "pg.chartLabel" .root }}
{{ include "pg.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: payment-gateway
{{- end -}}

{{- define "pg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pg.configMapName" -}}
{{- printf "%s-config" (include "pg.fullname" .) -}}
{{- end -}}

{{- define "pg.secretName" -}}
{{- default (printf "%s-secrets" (include "pg.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* image reference from an image block: (dict "image" .Values.image "default" tag) */}}
{{- define "pg.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "pg.appImage" -}}
{{- include "pg.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/*
One service's values: serviceDefaults overridden by the service's own block, as YAML (read it
back with fromYaml). (dict "root" $ "svc" <registry entry>)
*/}}
{{- define "pg.serviceValues" -}}
{{- $own := index .root.Values .svc.key | default dict -}}
{{- mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own) | toYaml -}}
{{- end -}}

{{/* Whether a registry entry's service is deployed: "true" or "". (dict "root" $ "svc" entry) */}}
{{- define "pg.serviceEnabled" -}}
{{- $own := index .root.Values .svc.key | default dict -}}
{{- if $own.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The in-cluster gRPC address other services dial for a registry entry, or its externalAddress.
Empty when the service is neither deployed nor given an external address.
*/}}
{{- define "pg.serviceAddress" -}}
{{- $v := include "pg.serviceValues" . | fromYaml -}}
{{- if $v.externalAddress -}}
{{- $v.externalAddress -}}
{{- else if include "pg.serviceEnabled" . -}}
{{- printf "%s.%s.svc.%s:%d" (include "pg.componentName" (dict "root" .root "component" .svc.name)) .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level settings shared by every Deployment: spread, scheduling. (dict "root" $ "component"
name "values" <merged values>)
*/}}
{{- define "pg.podScheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .values.topologySpread.maxSkew }}
    topologyKey: {{ .values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "pg.selectorLabels" (dict "root" .root "component" .component) | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations. (dict "root" $ "path" "/metrics") */}}
{{- define "pg.metricsAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.ports.metrics | quote }}
prometheus.io/path: {{ .path | quote }}
{{- end }}
{{- end -}}

{{/*
The check of a service's startup and liveness probes. (dict "root" $ "values" <merged values>)
*/}}
{{- define "pg.livenessCheck" -}}
{{- if eq .values.livenessProbeType "grpc" -}}
grpc:
  port: {{ .root.Values.ports.grpc }}
  {{- with .values.livenessGrpcService }}
  service: {{ . | quote }}
  {{- end }}
{{- else if eq .values.livenessProbeType "tcp" -}}
tcpSocket:
  port: grpc
{{- else -}}
{{- fail (printf "livenessProbeType must be tcp or grpc, not %q" .values.livenessProbeType) -}}
{{- end -}}
{{- end -}}
