"""User Service: accounts, passwords, access tokens, and each user's personal agenda.

The data lives in `agenda.calendar` (shared with the Group Service) and tokens are signed with
`agenda.common.tokens` (shared with the gateway): no other service imports this package.
"""
