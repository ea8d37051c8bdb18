"""Moved to :mod:`mlhead.cache.merge`; this alias keeps ``mlhead.shards`` imports working."""

from .cache.merge import *  # noqa: F401,F403
from .cache.merge import SHARD_NAME, ShardInfo, merged_fingerprint  # noqa: F401
