"""Settings: environment over .env over local defaults, and errors that name the variable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_core.config import ConfigError, Settings, get_settings, load_settings
from gateway_core.limits import MAX_AMOUNT_PAISA

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No configuration variable from the outside and no .env: each test writes its own."""
    for name in Settings.model_fields:
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
    assert settings.merchant_vpa_domain == "paygate"


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
        get_settings()


def test_block_threshold_above_max_score_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCK_THRESHOLD", "101")

    with pytest.raises(ConfigError, match="BLOCK_THRESHOLD"):
        get_settings()


def test_the_payment_ceiling_cannot_exceed_what_the_api_can_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_PAYMENT_AMOUNT_PAISA", str(MAX_AMOUNT_PAISA + 1))

    with pytest.raises(ConfigError, match="MAX_PAYMENT_AMOUNT_PAISA"):
        get_settings()


def test_wallet_endpoints_are_parsed_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_API_ENDPOINTS", '{"paytm": "https://api.paytm.com"}')

    assert get_settings().wallet_api_endpoints == {"paytm": "https://api.paytm.com"}


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
    defaults = get_settings()

    (tmp_path / ".env").write_text(example)
    get_settings.cache_clear()

    assert names == {name.upper() for name in Settings.model_fields}
    assert get_settings() == defaults


def test_production_refuses_the_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "a-real-secret-from-the-vault-0123456789")
    settings = load_settings()
    assert settings.secret("jwt_secret") == "a-real-secret-from-the-vault-0123456789"
    with pytest.raises(ConfigError) as info:
        settings.secret("encryption_key")
    assert "ENCRYPTION_KEY" in str(info.value)


def test_the_local_stack_may_use_the_development_secrets() -> None:
    assert Settings.model_validate({}).secret("provider_callback_secret")


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
        load_settings()
