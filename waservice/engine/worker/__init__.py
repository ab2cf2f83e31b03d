"""The engine worker process: one Go runtime (neonize) hosting the clients of many sessions.

Run as `python -m waservice.engine.worker FD` by the pool (pool.py); FD is its end of a socketpair.
"""
