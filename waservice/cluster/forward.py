"""Any node answers any route: a request for a session another node owns is forwarded to it.

(Skeleton: the forwarding itself is being built; `Owner` and `Locator` are the interface.)
"""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen
class Owner:
    node_id: str
    url: str  # its API, as it advertises it (cluster.advertise_url)


class Locator(Protocol):
    async def owner(self, session_id: str, *, create: bool) -> Owner | None:
        """The node that must answer for `session_id`, or None when this node answers.

        `create`: the request may create the session (POST /connect, /pair-code); an unknown
        session is then placed on the least-loaded live node. Raises DatabaseUnavailable."""
        ...
