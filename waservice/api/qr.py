"""QR codes as PNG data URLs, made once per code (a code is shown many times while it lives)."""

from __future__ import annotations

import base64
import functools
import io

import qrcode
from qrcode.image.pure import PyPNGImage


@functools.lru_cache(maxsize=256)
def qr_data_url(code: str) -> str:
    image = qrcode.make(code, image_factory=PyPNGImage, box_size=8, border=4)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
