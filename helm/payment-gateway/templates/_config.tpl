{{/*
The non-secret environment shared by every service, as a YAML map NAME: "value". The ConfigMap
carries it; the migrations Job (which runs before the ConfigMap exists) inlines it.
*/}}
{{- define "pg.configData" -}}
{{- $c := .Values.config -}}
{{- $env := dict -}}
{{- /* Not "local": services refuse the built-in development secrets. */ -}}
{{- $_ := set $env "APP_ENV" "production" -}}
{{- $_ := set $env "DB_HOST" $c.db.host -}}
{{- $_ := set $env "DB_PORT" $c.db.port -}}
{{- $_ := set $env "DB_DATABASE" $c.db.database -}}
{{- /* No DB_USERNAME: each service's pods log in as its own role (deployments.yaml). */ -}}
{{- $_ := set $env "DB_SSL_MODE" $c.db.sslMode -}}
{{- $_ := set $env "DB_MAX_OPEN_CONNS" $c.db.maxOpenConns -}}
{{- $_ := set $env "DB_MAX_IDLE_CONNS" $c.db.maxIdleConns -}}
{{- $_ := set $env "DB_COMMAND_TIMEOUT" $c.db.commandTimeout -}}
{{- $_ := set $env "DB_ACQUIRE_TIMEOUT" $c.db.acquireTimeout -}}
{{- $_ := set $env "OUTBOX_RETENTION" $c.outboxRetention -}}
{{- $_ := set $env "WEBHOOK_RETRY_SCHEDULE" $c.webhooks.retrySchedule -}}
{{- $_ := set $env "WEBHOOK_TIMEOUT" $c.webhooks.timeout -}}
{{- $_ := set $env "WEBHOOK_DISABLE_AFTER" $c.webhooks.disableAfter -}}
{{- with $c.webhooks.allowedCidrs }}{{ $_ := set $env "WEBHOOK_ALLOWED_CIDRS" . }}{{ end -}}
{{- $_ := set $env "REDIS_HOST" $c.redis.host -}}
{{- $_ := set $env "REDIS_PORT" $c.redis.port -}}
{{- $_ := set $env "REDIS_DB" $c.redis.db -}}
{{- $_ := set $env "KAFKA_BROKERS" $c.kafka.brokers -}}
{{- $_ := set $env "KAFKA_TOPIC_PAYMENTS" $c.kafka.topicPayments -}}
{{- $_ := set $env "KAFKA_TOPIC_WEBHOOKS" $c.kafka.topicWebhooks -}}
{{- $_ := set $env "JWT_ISSUER" $c.jwt.issuer -}}
{{- $_ := set $env "JWT_AUDIENCE" $c.jwt.audience -}}
{{- $_ := set $env "PCI_COMPLIANCE_MODE" $c.pciComplianceMode -}}
{{- $_ := set $env "FRAUD_RULES_CONFIG_PATH" $c.fraud.rulesConfigPath -}}
{{- $_ := set $env "MAX_FRAUD_SCORE" $c.fraud.maxFraudScore -}}
{{- $_ := set $env "BLOCK_THRESHOLD" $c.fraud.blockThreshold -}}
{{- with $c.fraud.mlApiUrl }}{{ $_ := set $env "FRAUD_ML_API_URL" . }}{{ end -}}
{{- with $c.walletApiEndpoints }}{{ $_ := set $env "WALLET_API_ENDPOINTS" . }}{{ end -}}
{{- $_ := set $env "SMTP_HOST" $c.smtp.host -}}
{{- $_ := set $env "SMTP_PORT" $c.smtp.port -}}
{{- $_ := set $env "SMTP_USERNAME" $c.smtp.username -}}
{{- $_ := set $env "SMTP_FROM" $c.smtp.from -}}
{{- $_ := set $env "SMTP_STARTTLS" $c.smtp.starttls -}}
{{- $_ := set $env "WEBHOOK_STREAM_PORT" .Values.ports.stream -}}
{{- $_ := set $env "WEB_HTTP_PORT" .Values.ports.pages -}}
{{- $_ := set $env "ENABLE_METRICS" $c.enableMetrics -}}
{{- with $c.jaegerEndpoint }}{{ $_ := set $env "JAEGER_ENDPOINT" . }}{{ end -}}
{{- $_ := set $env "LOG_LEVEL" $c.logLevel -}}
{{- range $svc := include "pg.registry" . | fromYamlArray -}}
{{- $addr := include "pg.serviceAddress" (dict "root" $ "svc" $svc) -}}
{{- if and (eq $svc.addrEnv "UPI_CORE_ENDPOINT") $c.upiCoreEndpoint -}}
{{- $addr = $c.upiCoreEndpoint -}}
{{- end -}}
{{- if $addr }}{{ $_ := set $env $svc.addrEnv $addr }}{{ end -}}
{{- end -}}
{{- /* Wallet providers: the sandbox serves them all, as in the local stack. */ -}}
{{- if and (not $c.walletApiEndpoints) .Values.sandbox.enabled (hasKey $env "UPI_CORE_ENDPOINT") (not $c.upiCoreEndpoint) -}}
{{- $sandbox := get $env "UPI_CORE_ENDPOINT" -}}
{{- $_ := set $env "WALLET_API_ENDPOINTS" (dict "paytm" $sandbox "phonepe" $sandbox "googlepay" $sandbox "amazonpay" $sandbox | toJson) -}}
{{- end -}}
{{- /* Net banking, like the wallets, is the sandbox unless real banks are configured. */ -}}
{{- if and .Values.sandbox.enabled (hasKey $env "UPI_CORE_ENDPOINT") (not $c.upiCoreEndpoint) -}}
{{- $_ := set $env "NETBANKING_ENDPOINT" (get $env "UPI_CORE_ENDPOINT") -}}
{{- $_ := set $env "CARD_ACQUIRER_ENDPOINT" (get $env "UPI_CORE_ENDPOINT") -}}
{{- end -}}
{{- /* Providers call back through the gateway; in-cluster Envoy unless a public URL is set. */ -}}
{{- $envoy := include "pg.componentName" (dict "root" $ "component" "envoy") -}}
{{- $_ := set $env "GATEWAY_PUBLIC_URL" ($c.gatewayPublicUrl | default (printf "http://%s:%v" $envoy .Values.envoy.service.port)) -}}
{{- with $c.sandboxPublicUrl }}{{ $_ := set $env "SANDBOX_PUBLIC_URL" . }}{{ end -}}
{{- $_ := set $env "RECON_SCHEDULE" $c.reconciliation.schedule -}}
{{- $_ := set $env "RECON_SETTLEMENT_SLA_DAYS" $c.reconciliation.settlementSlaDays -}}
{{- with $c.reconciliation.settlementReportsUrl }}{{ $_ := set $env "SETTLEMENT_REPORTS_URL" . }}{{ end -}}
{{- range $name, $value := $c.extra -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := $env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end -}}
{{- end -}}
