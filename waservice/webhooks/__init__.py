"""Webhooks: every logged event POSTed, signed (Standard Webhooks), to the URLs that asked for it.

rules.py says what a webhook may be; signing.py and schedule.py are pure; sender.py does the HTTP;
dispatcher.py runs one ordered lane per (webhook, session); service.py is what the routes call.
Deliveries are rows beside the event log (store/webhooks.py), written in the append's transaction.
"""
