"""Typed application keys of the API."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from shared.settings import Settings
from shared.store import Store

settings_key = web.AppKey("settings", Settings)
redis_key = web.AppKey("redis", Redis)
store_key = web.AppKey("store", Store)
