"""The hazmat layer: the only modules in fedscan that import ``cryptography.hazmat``.

As in pyca/cryptography itself, the danger is visible in the import path: a module under
``common.crypto.hazmat`` takes keys, nonces, curves and encodings as it is given them and leaves the
choices to its caller; everything outside it (``common.crypto``'s recipes: sealed objects, key files,
signing keys, the federation's PKI) chooses them once, for everyone. An import-linter contract in
``pyproject.toml`` forbids ``cryptography.hazmat`` anywhere else.

* :mod:`.primitives`: AES-256-GCM, HKDF-SHA256, scrypt, and the one source of randomness;
* :mod:`.ed25519`: Ed25519 keys, signatures and their encodings (audit logs, model cards, bundles);
* :mod:`.ec_x509`: EC P-384 keys, ECDSA-SHA384, X.509 certificates (the federation's CA, TLS, node keys).
"""

from __future__ import annotations

__all__: list[str] = []
