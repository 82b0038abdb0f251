"""Reusable test harness: private redis-servers and real service processes."""
