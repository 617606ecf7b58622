"""Delete queues and exchanges left behind by aborted test or bench runs.

Every test declares its topology under a private prefix (`t<8 hex>.`, benches `bench<hex>.`) and
deletes it afterwards; a run that was killed leaves its quorum queues behind, and each one holds
broker file handles. `scripts/test.sh` runs this before pytest. Queues with consumers are left
alone (another run may be using them).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import aio_pika

from tests.support.services import AMQP_URL

PATTERN = re.compile(r"^(t[0-9a-f]{8}|bench[0-9a-f]+)\.mailgw\.")


def _listed(what: list[str]) -> list[list[str]]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *what], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


async def clean() -> tuple[int, int]:
    queues = [r[0] for r in _listed(["list_queues", "name", "consumers"])
              if len(r) == 2 and PATTERN.match(r[0]) and r[1] == "0"]
    exchanges = [r[0] for r in _listed(["list_exchanges", "name"]) if r and PATTERN.match(r[0])]
    conn = await aio_pika.connect(AMQP_URL, timeout=10)
    try:
        channel = await conn.channel()
        for name in queues:
            await asyncio.wait_for(channel.queue_delete(name), 10)
        for name in exchanges:
            await asyncio.wait_for(channel.exchange_delete(name), 10)
    finally:
        await conn.close()
    return len(queues), len(exchanges)


if __name__ == "__main__":
    try:
        q, e = asyncio.run(clean())
    except (OSError, subprocess.SubprocessError) as exc:  # rabbitmqctl missing or slow: not fatal
        print(f"clean_broker: skipped ({exc})", file=sys.stderr)
        sys.exit(0)
    print(f"clean_broker: removed {q} stale test queue(s) and {e} exchange(s)")
