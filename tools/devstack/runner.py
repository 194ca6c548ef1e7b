"""How the stack runs its Python processes (migrations, seed, services): from this checkout's
virtualenv, or from the application image, so `make image-test` proves the image and not the
checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from devstack.config import StackSettings
from gateway_core.services import REPO_ROOT

# Set to an image name, the end-to-end tests run against that image (`make image-test`).
IMAGE_VARIABLE = "PAYGATE_STACK_IMAGE"
# The image's user (Containerfile, the chart's podSecurityContext).
IMAGE_UID = 10001
# Variables of the process environment that configure our code; the rest of the caller's
# environment (PATH, HOME, the virtualenv, pip's settings) belongs to the host, not the image.
_PASSED_PREFIXES = ("DB_", "OTEL_", "RATE_LIMIT_")
_SETTINGS = frozenset(name.upper() for name in StackSettings.model_fields)


class ModuleRunner(Protocol):
    def command(
        self, module: str, args: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], Path]:
        """argv, environment and working directory that run `python -m module *args`."""
        ...

    def descriptors(self) -> Path:
        """The descriptor set Envoy transcodes with, from the same build as the services."""
        ...


class CheckoutPython:
    """This checkout's virtualenv (`make run`, `make test`)."""

    def command(
        self, module: str, args: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], Path]:
        return [sys.executable, "-m", module, *args], dict(env), REPO_ROOT

    def descriptors(self) -> Path:
        return REPO_ROOT / "gen" / "descriptors.pb"


class ImagePython:
    """The application image, run with buildah (chroot isolation, host network, the image's
    non-root user, /tmp the only writable path, as the chart mounts it)."""

    def __init__(self, image: str, work_dir: Path) -> None:
        if shutil.which("buildah") is None:
            raise RuntimeError("buildah is not installed (Debian: apt-get install buildah)")
        self.image = image
        self._work_dir = work_dir
        self._host_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        # As tools/image/build.sh: the driver the image was built with, when one was forced.
        driver = os.environ.get("STORAGE_DRIVER")
        self._buildah_argv = ["buildah", *(["--storage-driver", driver] if driver else [])]
        self.container = ""
        self.rootfs = Path()
        self.created_at = 0.0

    def __enter__(self) -> ImagePython:
        self.created_at = time.time()
        self.container = self._buildah("from", "--pull-never", "--quiet", self.image)
        self.rootfs = Path(self._buildah("mount", self.container))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.container:
            subprocess.run(
                [*self._buildah_argv, "rm", self.container], env=self._host_env, capture_output=True
            )

    def command(
        self, module: str, args: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], Path]:
        passed = sorted(
            f"{name}={value}"
            for name, value in env.items()
            if name in _SETTINGS
            or name.startswith(_PASSED_PREFIXES)
            or name in ("SERVER_HOST", "SERVER_PORT", "METRICS_PORT")
        )
        # /tmp a tmpfs, as the chart mounts an emptyDir there over a read-only root.
        flags = ["--mount", "type=tmpfs,destination=/tmp"]
        flags += [flag for pair in passed for flag in ("--env", pair)]
        argv = [*self.run_argv(*flags), "python", "-m", module, *args]
        return argv, self._host_env, self._work_dir

    def descriptors(self) -> Path:
        return self.rootfs / "app" / "gen" / "descriptors.pb"

    def run_argv(self, *flags: str) -> list[str]:
        """The start of a command line that runs a command in the image, as its user, with
        buildah `run` flags of the caller's."""
        return [
            *self._buildah_argv, "run", "--isolation", "chroot", "--network", "host",
            "--user", f"{IMAGE_UID}:{IMAGE_UID}", *flags, self.container, "--",
        ]  # fmt: skip

    def _buildah(self, *args: str) -> str:
        done = subprocess.run(
            [*self._buildah_argv, *args],
            env=self._host_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()
