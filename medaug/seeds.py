"""Keyed randomness: every random stream is named by the keys of what it draws for (a dataset,
a fold, an image), so that results never depend on the order in which jobs run."""

from __future__ import annotations

import hashlib


def key_digest(*keys: object) -> int:
    """A 64-bit integer that depends only on ``keys``."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, keys)).encode()).digest()[:8], "little")


def keyed_seed(*keys: object) -> int:
    """A 63-bit seed (fits torch's ``manual_seed``) that depends only on ``keys``."""
    return key_digest(*keys) >> 1


def keyed_rng(seed: int, *keys: object):
    """A numpy Generator that depends on the master ``seed`` and on ``keys``."""
    import numpy as np

    return np.random.default_rng([seed, key_digest(*keys)])
