"""The application image (`make image-test`): the stack's migrations and every service run from
the image, and a merchant's first journey works through Envoy. Collected only when
PAYGATE_STACK_IMAGE names the image (tests/conftest.py); `make image` builds it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dotenv import dotenv_values

from devstack.runner import IMAGE_UID, ImagePython
from devstack.stack import Stack
from devstack.webhook_receiver import WebhookReceiver
from gateway_core.config import SECRET_RULES
from gateway_core.services import REPO_ROOT, SERVICES

FUTURE_YEAR = str(time.gmtime().tm_year + 3)
# Packages only development needs (requirements-dev.txt, requirements-gen.txt).
DEV_PACKAGES = (
    "pytest",
    "mypy",
    "ruff",
    "grpcio_tools",
    "mypy_protobuf",
    "uv",
    "pip",
    "setuptools",
)


@pytest.fixture(scope="module")
def image(stack: Stack) -> ImagePython:
    """The runner the stack's services were started with (conftest: PAYGATE_STACK_IMAGE)."""
    assert isinstance(stack.runner, ImagePython), "the stack does not run from the image"
    return stack.runner


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                status = (proc / "status").read_text()
            except OSError:
                continue
            ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
            parents.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@dataclass
class ImageProcess:
    pid: int
    argv: list[str]
    uid: int
    root: str


def _image_python(stack: Stack, name: str) -> list[ImageProcess]:
    """The processes of the image's Python under the stack's process for service `name`."""
    found = []
    for pid in _descendants(stack.pid(name)):
        proc = Path(f"/proc/{pid}")
        argv = [arg.decode() for arg in (proc / "cmdline").read_bytes().split(b"\0") if arg]
        if argv[:1] == ["/opt/venv/bin/python"]:
            uid = re.search(r"^Uid:\s+(\d+)", (proc / "status").read_text(), re.M)
            found.append(ImageProcess(pid, argv, int(uid[1]), os.readlink(proc / "root")))  # type: ignore[index]
    return found


def test_every_service_runs_from_the_image_as_its_non_root_user(
    stack: Stack, image: ImagePython
) -> None:
    """Each service is the image's Python, in a chroot of the image, as uid 10001."""
    for service in SERVICES:
        runs = _image_python(stack, service.name)
        assert [p.argv[1:] for p in runs] == [["-m", service.module]], service.name
        assert runs[0].root != "/", f"{service.name} runs outside the image's root"
        assert runs[0].uid == IMAGE_UID, f"{service.name} runs as uid {runs[0].uid}"


async def test_sigterm_reaches_the_images_python_and_it_drains_and_exits_0(
    stack: Stack, image: ImagePython
) -> None:
    """As Kubernetes stops a pod: SIGTERM to the service's own process (PID 1 in a pod, the
    chart's `command` runs python directly), which drains and exits 0."""
    (sandbox,) = _image_python(stack, "sandbox")
    os.kill(sandbox.pid, signal.SIGTERM)
    try:
        assert stack.exit_code("sandbox", timeout=20) == 0
    finally:
        await stack.revive("sandbox")


def test_no_file_in_the_image_holds_a_secret_or_a_key(image: ImagePython) -> None:
    """No dotenv, key or certificate file and no private key; the values this checkout's own
    .env holds (a developer's, maybe real) appear nowhere. The published development values
    do appear, in gateway_core.config, as the list of values production refuses."""
    own = dotenv_values(REPO_ROOT / ".env") if (REPO_ROOT / ".env").exists() else {}
    published = dotenv_values(REPO_ROOT / ".env.example")
    secrets = {
        value.encode()
        for name in SECRET_RULES
        if (value := own.get(name.upper()))
        and len(value) >= 8
        and value != published.get(name.upper())
    }
    key_files = re.compile(r"^(\.env(\..*)?|.*\.(pem|key|p12|pfx|jks)|id_(rsa|ed25519|ecdsa))$")
    offenders = []
    for top in ("app", "opt/venv/bin", "etc", "root", "home"):
        for path in (image.rootfs / top).rglob("*"):
            if key_files.match(path.name) and not path.is_relative_to(image.rootfs / "etc/ssl"):
                offenders.append(str(path))
            elif path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
                data = path.read_bytes()
                if b"PRIVATE KEY-----" in data or any(secret in data for secret in secrets):
                    offenders.append(str(path))
    assert offenders == []


def test_the_image_holds_no_tests_dev_packages_or_compilers(image: ImagePython) -> None:
    site = image.rootfs / "opt/venv/lib/python3.11/site-packages"
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert installed, site
    assert installed.isdisjoint(DEV_PACKAGES), installed & set(DEV_PACKAGES)
    assert not (image.rootfs / "app/tests").exists()
    assert not (image.rootfs / "app/services/fraud/training").exists()
    for compiler in ("gcc", "cc", "g++", "clang", "make"):
        assert not (image.rootfs / "usr/bin" / compiler).exists(), compiler
    assert (image.rootfs / "app/sbom.cdx.json").stat().st_size > 0


async def _wait_for(api: httpx.AsyncClient, auth: dict[str, str], pid: str, status: str) -> Any:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        payment = (await api.get(f"/api/v1/payments/{pid}", headers=auth)).json()
        if payment["status"] == status:
            return payment
        await asyncio.sleep(0.2)
    raise AssertionError(f"{pid} never reached {status}")


async def test_a_merchant_takes_upi_with_a_webhook_and_a_challenged_card_and_refunds(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    auth = merchant["auth"]
    receiver = WebhookReceiver()
    await receiver.start()
    endpoint = await api.post(
        "/api/v1/webhooks",
        headers=auth,
        json={"url": receiver.endpoint("image"), "events": ["payment.success"]},
    )
    assert endpoint.status_code == 200, endpoint.text
    upi = await api.post(
        "/api/v1/payments",
        headers=auth,
        json={"amount_paisa": 10000, "currency": "INR", "payment_method": "UPI",
              "payment_details": {"vpa": "success@upi"}},
    )  # fmt: skip
    assert upi.status_code == 200, upi.text
    await _wait_for(api, auth, upi.json()["payment_id"], "SUCCESS")
    try:
        (delivered,) = await receiver.wait_for("image")
    finally:
        await receiver.stop()
    event = delivered.verify(endpoint.json()["secret"])  # Standard Webhooks signature
    assert event["type"] == "payment.success"
    assert event["data"]["payment_id"] == upi.json()["payment_id"]

    card = {
        "card_number": "4000000000003220",
        "expiry_month": "12",
        "expiry_year": FUTURE_YEAR,
        "cvv": "123",
        "holder_name": "Asha Rao",
    }
    challenged = await api.post(
        "/api/v1/payments",
        headers=auth,
        json={"amount_paisa": 20000, "currency": "INR", "payment_method": "CARD",
              "payment_details": {"card": card}},
    )  # fmt: skip
    assert challenged.status_code == 200, challenged.text
    assert challenged.json()["status"] == "REQUIRES_ACTION"
    acs = challenged.json()["next_action"]["redirect_url"]
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.post(acs, data={"otp": "123456"})).status_code == 303
    pid = challenged.json()["payment_id"]
    await _wait_for(api, auth, pid, "SUCCESS")

    refund = await api.post(
        f"/api/v1/payments/{pid}/refund", json={"amount_paisa": 5000}, headers=auth
    )
    assert refund.json()["status"] == "PROCESSED", refund.text
    await _wait_for(api, auth, pid, "PARTIALLY_REFUNDED")


# Mount points buildah's chroot isolation provides, as Kubernetes does (not the services' writes).
RUNTIME_MOUNTS = (
    "tmp",
    "proc",
    "sys",
    "dev",
    "run",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
)


def test_the_services_write_nothing_outside_tmp(image: ImagePython) -> None:
    """The chart mounts the root filesystem read-only: after the journeys above, nothing may
    have been written to it (this test runs last in the module)."""
    written = []
    for top, dirs, files in os.walk(image.rootfs):
        here = Path(top)
        dirs[:] = [d for d in dirs if not _runtime_mount(here / d, image.rootfs)]
        for name in (*dirs, *files):
            path = here / name
            if path.is_symlink() or _runtime_mount(path, image.rootfs):
                continue
            stat = path.lstat()
            if max(stat.st_mtime, stat.st_ctime) > image.created_at:
                written.append(path.relative_to(image.rootfs).as_posix())
    assert written == []


def _runtime_mount(path: Path, rootfs: Path) -> bool:
    relative = path.relative_to(rootfs).as_posix()
    return any(relative == m or relative.startswith(f"{m}/") for m in RUNTIME_MOUNTS)


def test_receipts_still_format_indian_amounts_with_the_trimmed_locales(image: ImagePython) -> None:
    """The image keeps babel's en_IN locale chain only (Containerfile): receipts need it."""
    code = (
        "from babel.numbers import format_currency; "
        "print(format_currency(100000, 'INR', locale='en_IN'))"
    )
    done = subprocess.run(
        [*image.run_argv(), "python", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "₹1,00,000.00"
