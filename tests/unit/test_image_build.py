"""The application image's inputs agree with each other: the lock with requirements.txt, the
Containerfile's user with the chart's, `make image`'s tag with the chart's default image."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "payment-gateway"


def _locked() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)", text, re.M)
    }


def test_the_lock_pins_every_runtime_requirement_at_its_version() -> None:
    locked = _locked()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, requirements.txt wants "
            f"{requirement.specifier}: run `make lock`"
        )


def test_every_locked_package_has_hashes() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.lock").read_text())
    for block in blocks:
        if "==" in block.split("\n")[0]:
            assert "--hash=sha256:" in block, block.split("\n")[0]


def test_make_image_tags_the_charts_default_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    plan = subprocess.run(
        ["make", "-s", "--no-print-directory", "-n", "image"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"IMAGE={values['image']['repository']}:{chart['appVersion']} " in plan
    assert f"VERSION={chart['appVersion']} " in plan


def test_the_image_runs_as_the_user_the_chart_pins() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    runtime = (ROOT / "Containerfile").read_text().rsplit("\nFROM ", 1)[1]
    assert f"USER {uid}:{values['podSecurityContext']['runAsGroup']}" in runtime
    assert f"--uid {uid}" in runtime
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in runtime


def test_the_image_carries_the_documents_the_charts_envoy_serves() -> None:
    """Envoy's init container copies /app/gen/{openapi.json,api-docs.html} into its runtime
    volume (test_helm_chart runs its script): the build context admits them and the build puts
    them there."""
    admitted = (ROOT / ".containerignore").read_text().splitlines()
    build = (ROOT / "Containerfile").read_text().split("\nFROM ", 2)[1]
    assert "COPY gen/openapi.json gen/api-docs.html gen/" in build
    assert "mv gen /app/gen" in build.split("COPY gen/openapi.json", 1)[1]
    for name in ("openapi.json", "api-docs.html"):
        assert f"!gen/{name}" in admitted
