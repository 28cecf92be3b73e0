"""`python -m account_service` serves the account API and relays its events to NATS."""

from __future__ import annotations

import logging
import sys

import uvicorn

from account_service.app import create_app
from account_service.settings import Settings


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m account_service", file=sys.stderr)
        return 2
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
