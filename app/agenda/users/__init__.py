"""User Service: accounts, passwords, access tokens, and each user's personal agenda (see `store`)."""
