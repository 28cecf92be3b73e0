"""Write the published JSON Schemas of the events from the pydantic models.

    python -m shared.schema_export docs/schemas

writes `docs/schemas/<Type>.json` (one full CloudEvents envelope per event type,
its `data` being that type) and `Envelope.json` (any event). The pydantic
models in `shared.events` are the source of truth; a unit test fails when the
committed files and the models differ, so run this after changing a model.
The output uses only keywords that draft-07 and 2020-12 read alike; it is
declared draft-07, the dialect AsyncAPI 3.0 payloads default to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.events import Envelope, json_schemas

DIALECT = "http://json-schema.org/draft-07/schema#"


def published_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema document, exactly as committed under docs/schemas/."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in {**json_schemas(), "Envelope": Envelope.model_json_schema()}.items():
        out[f"{name}.json"] = {"$schema": DIALECT, **schema}
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, schema in published_schemas().items():
        path = directory / filename
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs/schemas")
    for path in write(target):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
