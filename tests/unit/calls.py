"""Calling the app's test client the way every unit test of the HTTP API does."""

from __future__ import annotations

import trio


async def call(client, method: str, path: str, **kwargs) -> tuple[int, dict]:
    response = await getattr(client, method)(path, **kwargs)
    return response.status_code, await response.get_json()


async def wait_state(client, session_id: str, state: str) -> dict:
    """Poll /status until the session is in `state`; its body then."""
    with trio.fail_after(5):
        while True:
            _, body = await call(client, "get", f"/status?session_id={session_id}")
            if body.get("state") == state:
                return body
            await trio.sleep(0.005)
