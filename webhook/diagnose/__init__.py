"""Diagnosing a live install: ``regcred check`` and ``regcred explain pod``.

``fetch`` is the one place that talks to the cluster (and to the webhook and /status); the
checks and the explanation are pure functions of what it fetched, so tables test them.
"""
