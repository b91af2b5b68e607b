"""Security building blocks for callqc: plain domain code, no Ray.

One module per job; import from the module you need (this package imports nothing
eagerly, so using ``envelope`` does not pull in gRPC or argon2):

- ``settings``    -- ``SecuritySettings``: every tunable number and key location.
- ``roles``       -- roles and the deny-by-default RPC permission table (``permissions.yaml``).
- ``identity``    -- ``Identity``, ``AuthError`` and ``current_identity()`` for servicers.
- ``tokens``      -- short-lived signed bearer tokens (Ed25519 JWT).
- ``passwords``   -- argon2id password hashing.
- ``login``       -- user directory in the object store, password + TOTP login, lockout.
- ``interceptor`` -- ``grpc.aio`` server interceptor: authenticate, authorise, expose identity.
- ``tls``         -- TLS / mTLS credentials; a throwaway test PKI.
- ``envelope``    -- client-side AES-256-GCM envelope encryption over the object store.
- ``audit``       -- append-only, hash-chained audit trail in the object store.
"""
