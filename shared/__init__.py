"""What crosses service lines: the event contract, the catalogues, and the
NATS, PostgreSQL, JWT and HTTP plumbing every service stands on."""
