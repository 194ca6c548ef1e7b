"""UPI addressing and the intent link (`upi://pay`) with its QR code."""

from __future__ import annotations

import base64
import functools
import io
import re
from urllib.parse import quote

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

from gateway_core.money import rupees_string

# NPCI VPA shape: a handle of letters, digits, '.', '-' or '_' (2-256 chars, starting with a
# letter or digit), '@', then the PSP's handle (letters and digits).
_VPA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,255}@[A-Za-z][A-Za-z0-9]{1,63}")

# UPI apps show the note (tn) in a single line; NPCI's linking spec caps it.
_MAX_NOTE = 80


def is_valid_vpa(vpa: str) -> bool:
    return _VPA.fullmatch(vpa) is not None


def pay_link(
    *,
    payee_vpa: str,
    payee_name: str,
    amount_paisa: int,
    currency: str,
    note: str,
    transaction_ref: str,
) -> str:
    """The deep link every UPI app understands, in NPCI's parameter order."""
    params = [
        ("pa", payee_vpa),
        ("pn", payee_name),
        ("am", rupees_string(amount_paisa)),
        ("cu", currency),
        ("tn", (note or f"Payment {transaction_ref}")[:_MAX_NOTE]),
        ("tr", transaction_ref),
    ]
    query = "&".join(f"{key}={quote(value, safe='@.-_')}" for key, value in params)
    return f"upi://pay?{query}"


# Every mask pattern gives a valid code (ISO/IEC 18004); qrcode's search for the "best" of the
# eight rendered each code eight times over: half the orchestrator's CPU under load, for no
# difference a scanner notices.
_MASK_PATTERN = 0


# Pixels per module, and the quiet zone in modules around the code (ISO/IEC 18004 asks for 4).
_BOX_SIZE = 8
_BORDER = 4


# A PENDING payment's page is polled: its code is rendered once per process, not per read.
@functools.lru_cache(maxsize=2048)
def qr_png_data_url(text: str) -> str:
    """`text` as a QR code PNG, in a data URL a browser or app can show directly."""
    code = qrcode.QRCode(
        error_correction=ERROR_CORRECT_M, border=_BORDER, mask_pattern=_MASK_PATTERN
    )
    code.add_data(text)
    code.make(fit=True)
    # One pixel per module, then scaled in C: qrcode's own image drew every dark module as its
    # own rectangle, a third of the rendering's CPU (which is paid on every UPI create).
    modules = code.get_matrix()  # with the quiet zone
    size = len(modules)
    image = Image.new("1", (size, size), 1)
    image.putdata([0 if dark else 1 for row in modules for dark in row])
    image = image.resize((size * _BOX_SIZE, size * _BOX_SIZE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
