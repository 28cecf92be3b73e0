"""The e2e tier's default `stack`: the three services started as a user would
(tests/e2e/stack.py); afterwards stopped, their logs printed (pytest shows them
only when the test failed) and the revocation bucket dropped. A test module may
override it (test_story runs it with one and two identity workers)."""

from __future__ import annotations

import pytest

from tests.e2e.stack import running_stack


@pytest.fixture
def stack(new_database, nats_names):
    with running_stack(new_database, nats_names) as s:
        yield s
