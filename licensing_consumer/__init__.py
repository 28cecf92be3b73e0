"""The licensing consumer: licences per company account, built from the account events."""
