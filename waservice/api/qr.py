"""QR codes as PNG data URLs: drawn in a worker thread, once per code, kept while the code is live.

Drawing a real-length code takes 40-80 ms of pure Python (qrcode, the library the stack names);
on the event loop that stalls every request. A session shows one code at a time and it is polled many
times while it lives, so the cache is keyed by session: a new code replaces its session's old
one, and every live code fits.
"""

from __future__ import annotations

import base64
import io
from collections import OrderedDict

import qrcode
import trio
from qrcode.image.pure import PyPNGImage
from quart import Quart

EXTENSION = "waservice.qr_images"
# More than the most sessions a service holds (sessions.max defaults to 10,000): every session
# showing a code keeps it cached. About 1.5 KB each.
CACHED_SESSIONS = 20_000
# One drawing thread: drawing is CPU-bound Python, more threads would only contend for the GIL
# with the event loop.
DRAWING_THREADS = 1


def render_data_url(code: str) -> str:
    """A PNG data URL, 8 px per module with a 4-module quiet zone (552 px for a real code)."""
    image = qrcode.make(code, image_factory=PyPNGImage, box_size=8, border=4)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class QrImages:
    """Data URLs of the codes sessions show; concurrent requests for a new code share one drawing."""

    def __init__(self, capacity: int = CACHED_SESSIONS, threads: int = DRAWING_THREADS) -> None:
        self.capacity = capacity
        self.drawn = 0  # how many codes were drawn (tests and benchmarks read it)
        self._limiter = trio.CapacityLimiter(threads)
        self._by_session: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (code, url)
        self._drawing: dict[str, trio.Event] = {}  # code -> set when its drawing ends

    async def data_url(self, session_id: str, code: str) -> str:
        while True:
            cached = self._by_session.get(session_id)
            if cached is not None and cached[0] == code:
                self._by_session.move_to_end(session_id)
                return cached[1]
            drawing = self._drawing.get(code)
            if drawing is None:
                return await self._draw(session_id, code)
            await drawing.wait()  # then look again: the drawer may have been cancelled

    async def _draw(self, session_id: str, code: str) -> str:
        self._drawing[code] = done = trio.Event()
        try:
            url = await trio.to_thread.run_sync(render_data_url, code, limiter=self._limiter)
        finally:
            del self._drawing[code]
            done.set()
        self.drawn += 1
        self._by_session[session_id] = (code, url)
        self._by_session.move_to_end(session_id)
        while len(self._by_session) > self.capacity:
            self._by_session.popitem(last=False)  # sessions deleted, or not polled for longest
        return url


def qr_images(app: Quart) -> QrImages:
    images = app.extensions.get(EXTENSION)
    if images is None:
        images = app.extensions[EXTENSION] = QrImages()
    return images
