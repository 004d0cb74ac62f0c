"""The Kubernetes seam: client, watch-fed caches, the Secret store, leader election, events.

Everything here talks to the API server through ``KubeClient``, which rate-limits every
call and runs the blocking ``kubernetes`` client in worker threads, never on the event loop.
Objects stay raw JSON dicts: typed client models cost seconds at tens of thousands of Secrets.

    connection.py        the ApiClient: kubeconfig or in-cluster, own namespace, throttled credential refresh
    client.py            KubeClient: token-bucket rate limit, worker threads, Retry-After, API error text
    permissions.py       a 403 from RBAC reported once per verb and resource, with the missing rule
    informer.py          generic list+watch cache with relist, backoff, ``synced`` and listeners
    caches.py            what the caches share: WatchCache, InformerCache (lifecycle), Shared values
    named.py             one informer per object name (field selector), for RBAC by resourceNames
    coverage.py          which managed Secret names the role covers; the rest reported, not tried
    secretstore.py       KubeSecretStore: the SecretStore over the managed-Secret watches
    credentialsecrets.py credentials Secrets (``secretRef``) of the own namespace, watched
    namespaces.py        namespace labels from a watch, a live GET on a miss, Terminating state
    configmap.py         the watched registries.yaml ConfigMap feeding ActiveRegistries
    leader.py            Lease-based leader election on threads of its own
    webhookcert.py       the managed serving certificate and the webhook's caBundle
    events.py            core/v1 Events on objects
"""
