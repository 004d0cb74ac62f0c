"""The CI credentials endpoint: one HTTPS call, a bearer token, the current credentials.

    endpoint.py   the HTTP API (``GET /registries/<id>/creds``), its rate limit and audit log
    tokens.py     the stored token list (SHA-256 hashes), lookup and creation
    command.py    ``regcred ci-token create`` / ``check``
"""
