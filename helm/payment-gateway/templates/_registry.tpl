{{/*
The services of the mesh, mirroring libs/gateway_core/services.py (the one registry: name,
module, address variable, gRPC services, public or not). tests/unit/test_helm_chart.py checks
that the two agree. Added here, per service:
  key      its block in values.yaml
  schema   its PostgreSQL schema (services that keep data): its pods log in as the role
           config.db.roles.<schema> with the Secret's DB_<SCHEMA>_PASSWORD
  callers  the only components allowed to open connections to it (NetworkPolicy ingress; the
           callers' egress follows from the same list)
Read it with: include "pg.registry" . | fromYamlArray
*/}}
{{- define "pg.registry" -}}
- key: orchestrator
  name: orchestrator
  schema: orchestrator
  module: orchestrator
  addrEnv: ORCHESTRATOR_ADDR
  public: true
  grpcServices:
    - paygate.payments.v1.PaymentService
    - paygate.payments.v1.PaymentMethodService
    - paygate.merchants.v1.MerchantService
    - paygate.callbacks.v1.ProviderCallbackService
    - paygate.disputes.v1.DisputeService
  # reconciliation: the internal paygate.ledger.v1.SettlementLedgerService (never routed by
  # Envoy; it checks reconciliation's service identity itself).
  callers: [envoy, reconciliation]
- key: fraud
  name: fraud
  module: fraud
  addrEnv: FRAUD_ADDR
  public: false
  grpcServices:
    - paygate.fraud.v1.FraudService
  callers: [orchestrator]
- key: tokenizationVault
  name: tokenization-vault
  schema: vault
  module: vault
  addrEnv: VAULT_ADDR
  public: false
  grpcServices:
    - paygate.vault.v1.VaultService
  callers: [orchestrator]
- key: webhook
  name: webhook
  schema: webhook
  module: webhook
  addrEnv: WEBHOOK_ADDR
  public: true
  grpcServices:
    - paygate.webhooks.v1.WebhookService
  callers: [envoy]
- key: reconciliation
  name: reconciliation
  schema: reconciliation
  module: reconciliation
  addrEnv: RECONCILIATION_ADDR
  public: true
  grpcServices:
    - paygate.reconciliation.v1.ReconciliationService
    - paygate.reconciliation.v1.MerchantReportingService
  callers: [envoy]
- key: sandbox
  name: sandbox
  module: sandbox
  addrEnv: UPI_CORE_ENDPOINT
  public: false
  grpcServices:
    - paygate.sandbox.v1.UpiCoreService
    - paygate.sandbox.v1.CardAcquirerService
    - paygate.sandbox.v1.WalletProviderService
    - paygate.sandbox.v1.NetBankingService
    - paygate.sandbox.v1.DisputeNetworkService
  callers: [orchestrator]
- key: ratelimit
  name: ratelimit
  module: ratelimit
  addrEnv: RATELIMIT_ADDR
  public: false
  grpcServices:
    - envoy.service.ratelimit.v3.RateLimitService
  callers: [envoy]
{{- end -}}
