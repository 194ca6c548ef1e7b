"""Settings: environment over .env over local defaults, and errors that name the variable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devstack.config import StackSettings
from fraud.settings import Settings as FraudSettings
from gateway_core.config import (
    LOCAL_PROVIDER_REPORT_KEYS,
    SECRET_RULES,
    ConfigError,
    Settings,
    get_settings,
    load_settings,
    published_secret_values,
)
from gateway_core.limits import MAX_AMOUNT_PAISA
from gateway_core.services import SERVICES
from orchestrator.settings import Settings as OrchestratorSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No configuration variable from the outside and no .env: each test writes its own."""
    for name in StackSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_describe_the_local_stack() -> None:
    settings = get_settings()

    assert settings.server_host == "127.0.0.1"
    assert settings.db_port == 15432
    assert settings.kafka_bootstrap_servers == ["127.0.0.1:19092"]
    assert settings.jwt_secret.get_secret_value().startswith("local-dev")
    assert len(settings.encryption_key.get_secret_value().encode()) == 32
    assert load_settings(OrchestratorSettings).merchant_vpa_domain == "paygate"


def test_dotenv_file_is_read_and_real_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DB_PORT=6000\nREDIS_PORT=7000\nUNRELATED_VARIABLE=1\n")
    monkeypatch.setenv("DB_PORT", "6001")

    settings = get_settings()

    assert settings.db_port == 6001
    assert settings.redis_port == 7000


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("log_level", "debug")

    assert get_settings().log_level == "DEBUG"


def test_invalid_value_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "not-a-port")

    with pytest.raises(ConfigError, match="DB_PORT"):
        get_settings()


def test_unparsable_json_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_API_ENDPOINTS", "{paytm:")

    with pytest.raises(ConfigError, match="WALLET_API_ENDPOINTS"):
        load_settings(OrchestratorSettings)


def test_block_threshold_above_max_score_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCK_THRESHOLD", "101")

    with pytest.raises(ConfigError, match="BLOCK_THRESHOLD"):
        load_settings(FraudSettings)


def test_the_payment_ceiling_cannot_exceed_what_the_api_can_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_PAYMENT_AMOUNT_PAISA", str(MAX_AMOUNT_PAISA + 1))

    with pytest.raises(ConfigError, match="MAX_PAYMENT_AMOUNT_PAISA"):
        get_settings()


def test_wallet_endpoints_are_parsed_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_API_ENDPOINTS", '{"paytm": "https://api.paytm.com"}')

    assert load_settings(OrchestratorSettings).wallet_api_endpoints == {
        "paytm": "https://api.paytm.com"
    }


def test_kafka_brokers_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "k1:9092, k2:9092,")

    assert get_settings().kafka_bootstrap_servers == ["k1:9092", "k2:9092"]


def test_dsn_quotes_credentials() -> None:
    settings = Settings.model_validate({"db_username": "pay user", "db_password": "p@ss/word:1"})

    assert settings.dsn == (
        "postgresql://pay%20user:p%40ss%2Fword%3A1@127.0.0.1:15432/payments?sslmode=disable"
    )


def test_dsn_for_a_unix_socket_puts_the_directory_in_the_query() -> None:
    settings = Settings.model_validate({"db_host": "/run/pg", "db_password": ""})

    assert settings.dsn == "postgresql://postgres:@/payments?host=/run/pg&sslmode=disable"


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Settings.model_validate({"db_password": "hunter2-db", "jwt_secret": "hunter2-jwt"}))

    assert "hunter2" not in text


def test_env_example_lists_every_variable_with_its_default(tmp_path: Path) -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if line[:1].isalpha()}
    # Every variable of every service: the common settings and each service's own.
    defaults = load_settings(StackSettings)

    (tmp_path / ".env").write_text(example)
    from_file = load_settings(StackSettings)

    assert names == {name.upper() for name in StackSettings.model_fields}
    # APP_ENV is the one exception: the file turns local mode on, which must be asked for.
    assert from_file.model_dump(exclude={"app_env"}) == defaults.model_dump(exclude={"app_env"})
    assert (from_file.app_env, defaults.app_env) == ("local", "production")


def test_every_secret_in_env_example_counts_as_published() -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if line[:1].isalpha()
    )
    published = published_secret_values()

    for name in SECRET_RULES:
        assert example[name.upper()] in published | {""}, name
    assert {"your-jwt-secret", "your-32-byte-encryption-key", "your_password"} <= published


# Secrets: fail closed outside APP_ENV=local

STRONG = "k7Qm2vXz9pLr4TsW8yBn6cHd3fJg5aEu1oIw"  # 36 bytes, published nowhere


def production(**secrets: str) -> Settings:
    """Settings as a production pod sees them: APP_ENV=production and these variables set."""
    return Settings.model_validate({"app_env": "production", **secrets})


def refusal(settings: Settings, *names: str) -> str:
    with pytest.raises(ConfigError) as raised:
        settings.secrets(*names)
    return str(raised.value)


def test_an_unset_app_env_means_production() -> None:
    settings = get_settings()

    assert not settings.is_local
    assert "JWT_SECRET is not set" in refusal(settings, "jwt_secret")


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("JWT_SECRET", "", "JWT_SECRET is empty"),
        ("JWT_SECRET", "short-secret", "JWT_SECRET is 12 bytes, shorter than 32"),
        ("ENCRYPTION_KEY", "e" * 31, "ENCRYPTION_KEY is 31 bytes, shorter than 32"),
        ("ORCHESTRATOR_SERVICE_KEY", "o" * 20, "ORCHESTRATOR_SERVICE_KEY is 20 bytes"),
        ("PROVIDER_CALLBACK_SECRET_ACS", "a" * 8, "PROVIDER_CALLBACK_SECRET_ACS is 8 bytes"),
        # Another secret's published default is no better than the variable's own.
        ("JWT_SECRET", "local-dev-encryption-key-32bytes", "JWT_SECRET is a value published"),
        (
            "PROVIDER_CALLBACK_SECRET_UPI_CORE",
            "local-dev-callback-secret-upi-core-0123456789",
            "PROVIDER_CALLBACK_SECRET_UPI_CORE is a value published",
        ),
        # The one shared key earlier versions of .env.example shipped.
        (
            "PROVIDER_CALLBACK_SECRET_NETBANKING",
            "local-dev-provider-callback-secret",
            "PROVIDER_CALLBACK_SECRET_NETBANKING is a value published",
        ),
        ("CARD_GATEWAY_API_KEY", "your-card-gateway-key", "CARD_GATEWAY_API_KEY is a value"),
        ("CARD_GATEWAY_API_KEY", "", "CARD_GATEWAY_API_KEY is empty"),
        ("DB_PASSWORD", "postgres", "DB_PASSWORD is a value published"),
        ("DB_PASSWORD", "your_password", "DB_PASSWORD is a value published"),
    ],
)
def test_production_refuses_a_bad_secret_naming_the_variable_and_the_rule(
    variable: str, value: str, rule: str
) -> None:
    message = refusal(production(**{variable.lower(): value}), variable.lower())

    assert rule in message
    assert "APP_ENV=production" in message
    if value:
        assert value not in message  # a refusal never prints the secret


def test_production_refuses_a_secret_left_at_its_published_default() -> None:
    message = refusal(production(), "db_password", "provider_callback_secret_acs")

    assert "DB_PASSWORD is not set" in message
    assert "PROVIDER_CALLBACK_SECRET_ACS is not set" in message


def test_production_accepts_strong_secrets_and_credentials_issued_elsewhere() -> None:
    settings = production(
        jwt_secret=STRONG,
        provider_callback_secret_acs=STRONG + "-acs",
        card_gateway_api_key="rzp_live_short",
        db_password="",
    )

    assert settings.secrets(
        "jwt_secret", "provider_callback_secret_acs", "card_gateway_api_key", "db_password"
    ) == {
        "jwt_secret": STRONG,
        "provider_callback_secret_acs": STRONG + "-acs",
        "card_gateway_api_key": "rzp_live_short",
        "db_password": "",
    }


def test_production_reads_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", STRONG)

    settings = load_settings()

    assert settings.secret("jwt_secret") == STRONG
    assert "ENCRYPTION_KEY is not set" in refusal(settings, "encryption_key")


def test_local_mode_accepts_the_published_secrets_but_never_a_short_jwt_secret() -> None:
    local = Settings.model_validate({"app_env": "local"})
    assert local.secrets(*SECRET_RULES)

    weak = Settings.model_validate(
        {"app_env": "local", "encryption_key": "short", "jwt_secret": "also-short"}
    )
    assert weak.secret("encryption_key") == "short"
    assert "JWT_SECRET is 10 bytes, shorter than 32" in refusal(weak, "jwt_secret")
    assert "ENCRYPTION_KEY is empty" in refusal(
        Settings.model_validate({"app_env": "local", "encryption_key": ""}), "encryption_key"
    )


def test_each_provider_has_its_own_callback_secret() -> None:
    secrets = Settings.model_validate({"app_env": "local"}).callback_secrets()

    assert set(secrets) == {"upi_core", "netbanking", "acs", "razorpay", "payu", "ccavenue"}
    assert len(set(secrets.values())) == len(secrets)


def test_two_providers_sharing_a_callback_secret_are_refused() -> None:
    settings = production(
        provider_callback_secret_upi_core=STRONG,
        provider_callback_secret_netbanking=STRONG + "-netbanking",
        provider_callback_secret_acs=STRONG,
        provider_callback_secret_razorpay=STRONG + "-razorpay",
        provider_callback_secret_payu=STRONG + "-payu",
        provider_callback_secret_ccavenue=STRONG + "-ccavenue",
    )

    with pytest.raises(ConfigError) as raised:
        settings.callback_secrets()

    message = str(raised.value)
    assert "PROVIDER_CALLBACK_SECRET_ACS and PROVIDER_CALLBACK_SECRET_UPI_CORE are equal" in message
    assert STRONG not in message


def test_every_secret_a_service_holds_has_a_rule() -> None:
    held = {variable.lower() for service in SERVICES for variable in service.secrets}

    assert held <= set(SECRET_RULES)
    assert {"provider_callback_secret_upi_core", "encryption_key", "db_password"} <= held


def test_developer_tools_are_local_unless_app_env_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(local_unless_set=True).is_local

    (tmp_path / ".env").write_text("APP_ENV=staging\n")
    assert load_settings(local_unless_set=True).app_env == "staging"

    monkeypatch.setenv("APP_ENV", "production")
    assert load_settings(local_unless_set=True).app_env == "production"


# Token lifetime


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("24h", 86_400),
        ("90m", 5_400),
        ("3600s", 3_600),
        (" 2h ", 7_200),
        ("1d", 86_400),
        ("1h30m", 5_400),
        ("86400", 86_400),
    ],
)
def test_jwt_max_lifetime_is_a_duration(
    monkeypatch: pytest.MonkeyPatch, written: str, seconds: int
) -> None:
    monkeypatch.setenv("JWT_MAX_LIFETIME", written)

    assert get_settings().jwt_max_lifetime == timedelta(seconds=seconds)


def test_jwt_max_lifetime_defaults_to_a_day() -> None:
    assert get_settings().jwt_max_lifetime == timedelta(hours=24)


@pytest.mark.parametrize("written", ["0s", "h", "-1h", "1x", "soon", "500ms"])
def test_a_bad_jwt_max_lifetime_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    monkeypatch.setenv("JWT_MAX_LIFETIME", written)

    with pytest.raises(ConfigError, match=r"JWT_MAX_LIFETIME"):
        get_settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("72h", 259200.0),
        ("1h30m", 5400.0),
        ("3", 3.0),
    ],
)
def test_durations_take_go_style_units_or_plain_seconds(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    monkeypatch.setenv("DB_COMMAND_TIMEOUT", text)
    assert load_settings().db_command_timeout == seconds


@pytest.mark.parametrize("text", ["10x", "s", "1s5", "-1s", "0s", "inf"])
def test_a_bad_duration_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION", text)
    with pytest.raises(ConfigError, match="OUTBOX_RETENTION"):
        load_settings(OrchestratorSettings)


# Settlement-report keys: a JSON object, each key a secret of its own


def test_local_mode_gives_every_provider_its_own_report_key() -> None:
    keys = Settings.model_validate({"app_env": "local"}).report_keys()

    assert keys == dict(LOCAL_PROVIDER_REPORT_KEYS)
    assert len(set(keys.values())) == len(keys)


def test_production_accepts_strong_report_keys() -> None:
    chosen = {"upi_core": STRONG + "-upi", "razorpay": STRONG + "-rzp"}

    settings = production(provider_report_keys=json.dumps(chosen))

    assert settings.report_keys() == chosen


@pytest.mark.parametrize(
    ("keys", "rule"),
    [
        ("upi_core=abc", "must be a JSON object of provider names to keys"),
        ('["a", "b"]', "must be a JSON object of provider names to keys"),
        ('{"upi_core": 7}', "must be a JSON object of provider names to keys"),
        ('{"upi_core": "short-key"}', "the key of upi_core is 9 bytes, shorter than 32"),
        (
            json.dumps({"upi_core": STRONG, "payu": LOCAL_PROVIDER_REPORT_KEYS["payu"]}),
            "the key of payu is a value published",
        ),
        (json.dumps({"upi_core": STRONG, "payu": STRONG}), "payu, upi_core share one key"),
        ('{"upi_core": ""}', "the key of upi_core is empty"),
    ],
)
def test_production_refuses_bad_report_keys_naming_the_provider(keys: str, rule: str) -> None:
    with pytest.raises(ConfigError) as raised:
        production(provider_report_keys=keys).report_keys()

    assert rule in str(raised.value)
    assert STRONG not in str(raised.value)


def test_no_report_keys_open_no_reports() -> None:
    assert production(provider_report_keys="").report_keys() == {}


def test_production_refuses_report_keys_left_at_their_published_default() -> None:
    with pytest.raises(ConfigError, match="PROVIDER_REPORT_KEYS is not set"):
        production().report_keys()
