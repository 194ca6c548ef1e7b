"""Write the Helm chart's view of the service registry (`make gen` runs it).

    python tools/chart_topology.py [OUT]    (default: helm/payment-gateway/files/topology.json)

The chart's `pg.registry` reads this file, so the chart never repeats a service's name, module,
address variable, gRPC services, schema or callers: libs/gateway_core/services.py is the one
source. The file is build output (.gitignore), like gen/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gateway_core.services import REPO_ROOT, chart_topology

DEFAULT_OUT = REPO_ROOT / "helm" / "payment-gateway" / "files" / "topology.json"


def write(out: Path = DEFAULT_OUT) -> Path:
    out.write_text(json.dumps(chart_topology(), indent=2) + "\n")
    return out


def main(argv: list[str]) -> int:
    out = write(Path(argv[0]) if argv else DEFAULT_OUT)
    print(f"service topology for the chart written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
