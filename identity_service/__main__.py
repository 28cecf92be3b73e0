"""`python -m identity_service [serve | rebuild | rotate-keys]`.

- serve (default): the HTTP API and the membership projector, with
  `IDENTITY_WORKERS` uvicorn worker processes (each one a full replica);
- rebuild: empty the membership read model and replay it from the stream;
- rotate-keys: make a new signing key current (the previous stays in the JWKS).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from identity_service.settings import Settings


def serve(settings: Settings) -> None:
    import uvicorn

    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   access_log=False, loop="uvloop", http="httptools", lifespan="on",
                   server_header=False, date_header=False, timeout_keep_alive=30)
    if settings.identity_workers > 1:
        uvicorn.run("identity_service.app:app_factory", factory=True, workers=settings.identity_workers,
                    **options)
    else:
        from identity_service.app import create_app

        uvicorn.run(create_app(settings), **options)


async def rebuild(settings: Settings) -> int:
    from identity_service.app import make_consumer, open_database
    from shared.bus import NatsLink

    pool = await open_database(settings)
    link = NatsLink(settings.nats_url, "identity-rebuild", stream=settings.nats_stream,
                    subjects=[f"{settings.nats_subject_prefix}.>"])
    await link.start(wait=10)
    try:
        return await make_consumer(settings, pool, link).rebuild()
    finally:
        await link.close()
        await pool.close()


async def rotate_keys(settings: Settings) -> str:
    from identity_service import keys
    from identity_service.app import open_database

    pool = await open_database(settings)
    try:
        await keys.ensure_key(pool, settings.key_passphrase)
        return await keys.rotate(pool, settings.key_passphrase)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m identity_service", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "rebuild", "rotate-keys"])
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(settings)
    elif args.command == "rebuild":
        applied = asyncio.run(rebuild(settings))
        print(f"rebuilt the membership read model: {applied} events applied")
    else:
        kid = asyncio.run(rotate_keys(settings))
        print(f"new signing key {kid} is current; the previous one stays in the JWKS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
