"""Register the repo's import roots (libs, each service, generated code) in the virtualenv.

The services are separate processes but one repository; a .pth file is the plainest way to
make `import orchestrator`, `import gateway_core` and `import paygate.payments.v1` work for
every entry point, test and tool without packaging each folder.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_ROOTS = [
    ROOT / "gen",
    ROOT / "libs",
    ROOT / "tools",
    *sorted(p for p in (ROOT / "services").iterdir() if p.is_dir()),
]


def main() -> None:
    target = Path(site.getsitepackages()[0]) / "paygate-dev.pth"
    target.write_text("".join(f"{p}\n" for p in IMPORT_ROOTS))
    print(f"import roots registered in {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
