"""The catalogues: roles, rights and plans.

Pure data and pure checks. Every service (and every consumer) reads the same
catalogue, so a right or a plan means one thing everywhere.
"""

from __future__ import annotations

from types import MappingProxyType

from shared.errors import InvalidInput

ROLES: tuple[str, ...] = ("admin", "user", "viewer")

AREAS: tuple[str, ...] = (
    "quotes",
    "invoices",
    "projects",
    "planning",
    "purchases",
    "reports",
    "settings",
)
LEVELS: tuple[str, ...] = ("read", "write")
RIGHTS: frozenset[str] = frozenset(f"{area}:{level}" for area in AREAS for level in LEVELS)

# Seats per plan; None means unlimited.
PLANS: MappingProxyType[str, int | None] = MappingProxyType(
    {"solo": 1, "team": 5, "business": 25, "enterprise": None}
)
DEFAULT_PLAN = "team"


def _rights(**levels: str) -> tuple[str, ...]:
    return tuple(f"{area}:{levels.get(area, levels['default'])}" for area in AREAS)


DEFAULT_RIGHTS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "admin": _rights(default="write"),
        "user": _rights(default="write", settings="read"),
        "viewer": _rights(default="read"),
    }
)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    return role


def check_plan(plan: str) -> str:
    if plan not in PLANS:
        raise InvalidInput(f"plan must be one of {', '.join(PLANS)}; got {plan!r}")
    return plan


def check_rights(rights: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate a list of rights names; return them de-duplicated, in catalogue order."""
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise InvalidInput(
            f"unknown rights {unknown}: a right is '<area>:read' or '<area>:write' "
            f"for the areas {', '.join(AREAS)}"
        )
    wanted = set(rights)
    return tuple(f"{a}:{lv}" for a in AREAS for lv in LEVELS if f"{a}:{lv}" in wanted)


def rights_for(role: str, rights: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The rights a member gets: the given ones checked, else the role's defaults."""
    check_role(role)
    if rights is None:
        return DEFAULT_RIGHTS[role]
    return check_rights(rights)


def seats_included(plan: str) -> int | None:
    return PLANS[check_plan(plan)]
