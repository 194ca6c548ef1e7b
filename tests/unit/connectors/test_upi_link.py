"""UPI intent links and their QR codes."""

from __future__ import annotations

import base64
import io
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image

from orchestrator.connectors.upi.link import is_valid_vpa, pay_link, qr_png_data_url


def test_pay_link_carries_npci_parameters() -> None:
    link = pay_link(
        payee_vpa="demostore@paygate",
        payee_name="Demo Store",
        amount_paisa=10050,
        currency="INR",
        note="Order #12345",
        transaction_ref="PAY_01ABC",
    )
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc) == ("upi", "pay")
    assert parse_qs(parts.query) == {
        "pa": ["demostore@paygate"],
        "pn": ["Demo Store"],
        "am": ["100.50"],
        "cu": ["INR"],
        "tn": ["Order #12345"],
        "tr": ["PAY_01ABC"],
    }
    assert list(parse_qs(parts.query)) == ["pa", "pn", "am", "cu", "tn", "tr"]


@pytest.mark.parametrize(
    ("paisa", "rupees"), [(1, "0.01"), (100, "1.00"), (123456789, "1234567.89")]
)
def test_amount_is_rupees_with_two_decimals(paisa: int, rupees: str) -> None:
    link = pay_link(
        payee_vpa="a@b1",
        payee_name="A",
        amount_paisa=paisa,
        currency="INR",
        note="",
        transaction_ref="PAY_1",
    )
    assert parse_qs(urlsplit(link).query)["am"] == [rupees]


def test_qr_code_decodes_back_to_exactly_the_link() -> None:
    link = pay_link(
        payee_vpa="demostore@paygate",
        payee_name="Demo & Sons",
        amount_paisa=99,
        currency="INR",
        note="Tea, 2 cups",
        transaction_ref="PAY_01XYZ",
    )
    data_url = qr_png_data_url(link)
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))
    assert image.format == "PNG"
    # Eight pixels a module, the four-module quiet zone included: a version-3 code is 29 + 8.
    assert image.size[0] == image.size[1]
    assert image.size[0] % 8 == 0
    assert image.size[0] // 8 >= 21 + 8
    assert image.getpixel((0, 0))
    assert image.getpixel((4 * 8 - 1, 4 * 8 - 1))
    assert not image.convert("1").getpixel((4 * 8, 4 * 8))  # a finder pattern's dark corner
    decoded = zxingcpp.read_barcodes(image)
    assert [d.text for d in decoded] == [link]


@pytest.mark.parametrize("vpa", ["user@okbank", "first.last-1_x@ybl", "9999999999@paytm"])
def test_valid_vpas(vpa: str) -> None:
    assert is_valid_vpa(vpa)


@pytest.mark.parametrize(
    "vpa", ["", "user", "@bank", "user@", "us er@bank", "user@@bank", "u@1bank"]
)
def test_malformed_vpas(vpa: str) -> None:
    assert not is_valid_vpa(vpa)


def test_a_polled_payments_code_is_rendered_once() -> None:
    link = pay_link(
        payee_vpa="demostore@paygate",
        payee_name="Demo",
        amount_paisa=12345,
        currency="INR",
        note="",
        transaction_ref="PAY_POLLED",
    )
    first = qr_png_data_url(link)
    hits = qr_png_data_url.cache_info().hits
    assert qr_png_data_url(link) is first
    assert qr_png_data_url.cache_info().hits == hits + 1
