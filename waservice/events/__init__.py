"""Everything that happens to a session, as events: recorded durably, then delivered.

model.py is what an event is (shared with the engine workers, so it imports nothing of the service).
"""
