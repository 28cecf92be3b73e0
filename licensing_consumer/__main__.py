"""`python -m licensing_consumer` serves the API and consumes the events;
`python -m licensing_consumer rebuild` empties the read model and replays the stream."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn

from licensing_consumer.app import create_app, open_runtime
from licensing_consumer.settings import Settings


async def rebuild(settings: Settings) -> int:
    rt = await open_runtime(settings)
    try:
        await rt.link.wait_connected(timeout=30)
        return await rt.consumer.rebuild()
    finally:
        await rt.close()


def main(argv: list[str]) -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["rebuild"]:
        applied = asyncio.run(rebuild(settings))
        print(f"licensing read model rebuilt: {applied} events applied")
        return 0
    if argv:
        print("usage: python -m licensing_consumer [rebuild]", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
