"""The identity service: people, emails, passwords, sessions, signing keys,
the membership read model and switching between company accounts."""
