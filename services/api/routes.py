"""The API's route table."""

from __future__ import annotations

from aiohttp import web

from services.api import events, queue_views, views
from shared import metrics


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/jobs", views.create_job)
    r.add_post("/jobs/batch", views.create_batch)
    r.add_get("/jobs/{jobId}", views.get_job, allow_head=False)
    r.add_post("/jobs/{jobId}/cancel", views.cancel_job)
    r.add_post("/jobs/{jobId}/replay", views.replay_job)
    r.add_get("/queues", queue_views.list_queues, allow_head=False)
    r.add_get("/queues/{queue}", queue_views.get_queue, allow_head=False)
    r.add_post("/queues/{queue}/pause", queue_views.pause_queue)
    r.add_post("/queues/{queue}/resume", queue_views.resume_queue)
    r.add_get("/queues/{queue}/dead", queue_views.list_dead, allow_head=False)
    r.add_delete("/queues/{queue}/dead", queue_views.purge_dead)
    r.add_post("/queues/{queue}/dead/replay", queue_views.replay_dead)
    r.add_get("/healthz", views.healthz)
    r.add_get("/readyz", views.readyz)
    r.add_get("/openapi.json", views.openapi, allow_head=False)
    r.add_get("/docs", views.docs, allow_head=False)
    r.add_get("/events", events.stream_events, allow_head=False)
    r.add_get("/metrics", metrics.metrics_view, allow_head=False)
