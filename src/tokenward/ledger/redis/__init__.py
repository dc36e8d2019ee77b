"""The Redis backend, ``redis://host:port/db?events=URL``: holds and balances in Redis, the durable
record in the store ``events=`` names (see :mod:`.ledger`; extra ``redis``)."""

from tokenward.ledger.redis.ledger import RedisLedger, RedisSettings, parse_redis_url

__all__ = ["RedisLedger", "RedisSettings", "parse_redis_url"]
