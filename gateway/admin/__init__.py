"""Run-time management: virtual keys, team and tenant budgets, and spend, kept in Redis so that
every replica sees a change within `auth.redis_cache_seconds`."""
