"""The engine worker process: one Go runtime (neonize) hosting the clients of many sessions.

Run as `python -m waservice.engine.worker FD ACTIVITY_FD` by the pool (pool.py): its ends of two
socketpairs, one for commands, replies and connection states, one for activity (worker/activity.py).
"""

# Set by the pool at spawn: "1" = report the messages of a history sync, not only their count.
HISTORY_MESSAGES_ENV = "WASERVICE_HISTORY_MESSAGES"
