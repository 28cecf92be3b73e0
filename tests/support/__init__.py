"""Helpers the test suites share, one place each:

- polling.eventually      wait for a condition (sync or async check), never a fixed sleep
- tokens                  TestIssuer (access tokens + in-memory JWKS verifier), bearer, claims_of,
                          the token-exchange URNs; licensing_tokens: its licensing-test flavour
- bad_tokens              tampered / alg:none / HS256-with-the-public-key tokens made from a good one
- account_api             the account app in process (Api, account_api, assert_error)
- identity                identity replicas, the event Publisher, identity_stack
- licensing_app           the licensing app in process, publish_story
- licensing_events        account event stories and the licences they should give
- processes.alive         is a pid still running (zombies are not)
The e2e tier's process stack is tests/e2e/stack.py (its default fixture: tests/e2e/conftest.py)."""
