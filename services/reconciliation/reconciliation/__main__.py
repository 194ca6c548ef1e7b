"""`python -m reconciliation`: the reconciliation service; `python -m reconciliation run`:
reconcile one provider's day by hand, with a progress bar.

python -m reconciliation                                  serve gRPC, consume payments.events,
                                                          post settled lines, run RECON_SCHEDULE
python -m reconciliation run --provider P --date D        fetch P's file for D (P may be a
                                                          method: every provider of it) and
                                                          reconcile it
python -m reconciliation run --provider P --date D --file F   reconcile a local file instead
"""

from __future__ import annotations

import sys

from gateway_core.server import run_service
from reconciliation.app import cli, main

if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(cli(sys.argv[1:]))
    run_service(main)
