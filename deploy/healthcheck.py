"""Container health check: `python -m deploy.healthcheck 8001` exits 0 when
http://127.0.0.1:8001/readyz answers 200, else 1. Standard library only, so it
runs in the slim image without curl."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def check(port: int, path: str = "/readyz", timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:  # noqa: S310
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or not argv[0].isdigit():
        print("usage: python -m deploy.healthcheck PORT [PATH]", file=sys.stderr)
        return 2
    return 0 if check(int(argv[0]), *argv[1:]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
