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
Empty when the service is neither deployed nor given an external address. The headless Service:
its name resolves to every ready pod, and the callers' channels balance round robin over them
(a ClusterIP pins each caller's one HTTP/2 connection to one pod).
*/}}
{{- define "pg.serviceAddress" -}}
{{- $v := include "pg.serviceValues" . | fromYaml -}}
{{- if $v.externalAddress -}}
{{- $v.externalAddress -}}
{{- else if include "pg.serviceEnabled" . -}}
{{- printf "%s-headless.%s.svc.%s:%d" (include "pg.componentName" (dict "root" .root "component" .svc.name)) .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.ports.grpc) -}}
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

{{/*
The Secret's keys (environment variable names) and the values.yaml key under `secrets` that
gives each; generatedSecrets: the keys generated when not given, with their lengths.
*/}}
{{- define "pg.secretKeys" -}}
JWT_SECRET: jwtSecret
ENCRYPTION_KEY: encryptionKey
DB_PASSWORD: dbPassword
DB_ORCHESTRATOR_PASSWORD: dbOrchestratorPassword
DB_VAULT_PASSWORD: dbVaultPassword
DB_WEBHOOK_PASSWORD: dbWebhookPassword
DB_RECONCILIATION_PASSWORD: dbReconciliationPassword
DB_WEB_PASSWORD: dbWebPassword
REDIS_PASSWORD: redisPassword
CARD_GATEWAY_API_KEY: cardGatewayApiKey
SMTP_PASSWORD: smtpPassword
ORCHESTRATOR_SERVICE_KEY: orchestratorServiceKey
RECONCILIATION_SERVICE_KEY: reconciliationServiceKey
PROVIDER_REPORT_KEYS: providerReportKeys
IDEMPOTENCY_FINGERPRINT_KEY: idempotencyFingerprintKey
PROVIDER_CALLBACK_SECRET_UPI_CORE: providerCallbackSecretUpiCore
PROVIDER_CALLBACK_SECRET_NETBANKING: providerCallbackSecretNetbanking
PROVIDER_CALLBACK_SECRET_ACS: providerCallbackSecretAcs
PROVIDER_CALLBACK_SECRET_RAZORPAY: providerCallbackSecretRazorpay
PROVIDER_CALLBACK_SECRET_PAYU: providerCallbackSecretPayu
PROVIDER_CALLBACK_SECRET_CCAVENUE: providerCallbackSecretCcavenue
{{- end -}}

{{- define "pg.generatedSecrets" -}}
JWT_SECRET: 48
ENCRYPTION_KEY: 32
ORCHESTRATOR_SERVICE_KEY: 48
RECONCILIATION_SERVICE_KEY: 48
IDEMPOTENCY_FINGERPRINT_KEY: 48
PROVIDER_CALLBACK_SECRET_UPI_CORE: 48
PROVIDER_CALLBACK_SECRET_NETBANKING: 48
PROVIDER_CALLBACK_SECRET_ACS: 48
PROVIDER_CALLBACK_SECRET_RAZORPAY: 48
PROVIDER_CALLBACK_SECRET_PAYU: 48
PROVIDER_CALLBACK_SECRET_CCAVENUE: 48
DB_ORCHESTRATOR_PASSWORD: 32
DB_VAULT_PASSWORD: 32
DB_WEBHOOK_PASSWORD: 32
DB_RECONCILIATION_PASSWORD: 32
DB_WEB_PASSWORD: 32
{{- end -}}

{{/* The Secret key holding a schema's role password: DB_<SCHEMA>_PASSWORD. */}}
{{- define "pg.rolePasswordKey" -}}
{{- printf "DB_%s_PASSWORD" (upper .) -}}
{{- end -}}

{{/*
The base64 value of one key of the chart-managed Secret: given in values (secrets.<key>), else
kept from the Secret in the cluster (lookup), else generated (secrets.generate) or a failed
install, else "" for keys that are never generated. A generated value is made once per render
and remembered, so the migrations hook Secret and the release Secret carry the same one.
(dict "root" $ "key" "JWT_SECRET")
*/}}
{{- define "pg.secretValue" -}}
{{- $root := .root -}}
{{- if not (hasKey $root.Values "_pgSecretValues") -}}
{{- $_ := set $root.Values "_pgSecretValues" (dict) -}}
{{- end -}}
{{- $known := $root.Values._pgSecretValues -}}
{{- if not (hasKey $known .key) -}}
{{- $valueKey := get (include "pg.secretKeys" $root | fromYaml) .key -}}
{{- $generated := include "pg.generatedSecrets" $root | fromYaml -}}
{{- $live := lookup "v1" "Secret" $root.Release.Namespace (include "pg.secretName" $root) | default dict -}}
{{- $old := $live.data | default dict -}}
{{- $given := index $root.Values.secrets $valueKey -}}
{{- $value := "" -}}
{{- if $given -}}
{{- $value = $given | toString | b64enc -}}
{{- else if index $old .key -}}
{{- $value = index $old .key -}}
{{- else if hasKey $generated .key -}}
{{- if not $root.Values.secrets.generate -}}
{{- fail (printf "secrets.%s is required: set it (from a file outside the repository), or set secrets.existingSecret, or secrets.generate=true for a throwaway install" $valueKey) -}}
{{- end -}}
{{- $value = randAlphaNum (int (get $generated .key)) | b64enc -}}
{{- end -}}
{{- $_ := set $known .key $value -}}
{{- end -}}
{{- get $known .key -}}
{{- end -}}
