"""The local stack's SMTP server: its own unless the user points at one, like every other part."""

from __future__ import annotations

import pytest

from devstack.config import ephemeral_ports, external_parts, fixed_ports, stack_env


def test_the_stack_runs_its_own_smtp_server_by_default() -> None:
    # .env.example lists SMTP_HOST/SMTP_PORT with their local values: that is not "set".
    from_dotenv = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "10025"}
    external = external_parts(from_dotenv, process_env={})
    ports = ephemeral_ports()

    env = stack_env(from_dotenv, ports, external)

    assert "smtp" not in external
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("127.0.0.1", str(ports.smtp))
    assert env["WEBHOOK_STREAM_PORT"] == str(ports.webhook_stream)


@pytest.mark.parametrize(
    ("merged", "process"),
    [
        ({"SMTP_PORT": "1025"}, {"SMTP_PORT": "1025"}),
        ({"SMTP_HOST": "127.0.0.1"}, {"SMTP_HOST": "127.0.0.1"}),
        ({"SMTP_HOST": "smtp.mail.example"}, {}),  # a remote host, even from .env
        ({"STACK_EXTERNAL": "smtp"}, {"STACK_EXTERNAL": "smtp"}),
    ],
)
def test_an_smtp_server_set_in_the_environment_is_used_as_it_is(
    merged: dict[str, str], process: dict[str, str]
) -> None:
    external = external_parts(merged, process_env=process)

    env = stack_env(
        merged | {"SMTP_PORT": merged.get("SMTP_PORT", "2525")}, fixed_ports({}), external
    )

    assert "smtp" in external
    assert env["SMTP_PORT"] == merged.get("SMTP_PORT", "2525")
