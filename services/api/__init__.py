"""The HTTP API: validates, enqueues, answers queries. Never runs jobs."""
