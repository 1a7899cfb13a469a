"""Keystores: everything that holds an L1 root key, behind one interface (see `base.Keystore`).

The layer above the core: it knows nothing of tenants or of the key chain's models.
"""
