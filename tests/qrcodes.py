"""Read QR codes from images as a phone would, with zxing-cpp (its native code ships in the wheel, so
no system library is needed)."""

from __future__ import annotations

import base64
import io


def decode_qr(png: bytes) -> list[str]:
    """The text of every QR code in a PNG (or any image Pillow reads)."""
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    return [code.text for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


def decode_qr_data_url(data_url: str) -> list[str]:
    """Same, for a ``data:image/png;base64,...`` URL (what /qr returns)."""
    return decode_qr(base64.b64decode(data_url.removeprefix("data:image/png;base64,")))
