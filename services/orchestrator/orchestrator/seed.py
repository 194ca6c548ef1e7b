"""`python -m orchestrator.seed` (`make db-seed`): demo data for a local stack. Idempotent.

Creates the demo merchant `MER_DEMO` ("Demo Store", payee VPA demostore@paygate) so that
`make token MERCHANT=MER_DEMO` gives a token that can take payments right away.
"""

from __future__ import annotations

import asyncio

from gateway_core.config import load_settings
from gateway_core.db import create_pool
from orchestrator.settings import Settings

DEMO_MERCHANT = ("MER_DEMO", "Demo Store", "payments@demostore.example", "5411")


async def seed() -> None:
    settings = load_settings(Settings, local_unless_set=True)
    pool = await create_pool(settings, "orchestrator")
    try:
        merchant_id, name, email, category = DEMO_MERCHANT
        vpa = f"demostore@{settings.merchant_vpa_domain}"
        await pool.execute(
            "INSERT INTO merchants (merchant_id, name, email, vpa, category)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id) DO NOTHING",
            merchant_id,
            name,
            email,
            vpa,
            category,
        )
        print(f"seeded merchant {merchant_id} ({name}, {vpa})")
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(seed())
