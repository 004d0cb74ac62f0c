"""The Kubernetes seam: client, watch-fed caches, the Secret store, leader election, events.

Everything here talks to the API server through ``KubeClient``, which rate-limits every
call and runs the blocking ``kubernetes`` client in worker threads, never on the event loop.
Objects stay raw JSON dicts: typed client models cost seconds at tens of thousands of Secrets.

    client.py       ApiClient construction, own namespace, token-bucket rate limit, worker threads
    informer.py     generic list+watch cache with relist, backoff, ``synced`` and listeners
    secretstore.py  KubeSecretStore: the SecretStore over the managed-Secret watch
    material.py     credentials Secrets of the own namespace as a MaterialSource
    configmap.py    the watched registries.yaml ConfigMap and its ActiveConfig callback
    leader.py       Lease-based leader election
    events.py       core/v1 Events on objects
"""
