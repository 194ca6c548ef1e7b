"""LineScreen: which lines of a settlement file the database must still judge rule by rule.

The screen may only clear lines the database would clear too; everything else is a suspect
(or the whole file is, `everything`). tests/unit/test_recon_ingest.py checks the database's
verdicts on the same broken lines end to end.
"""

from __future__ import annotations

import pytest

from reconciliation.settlement_file import LineScreen

GOOD = b"RG1,PAY_G1,payment,1234.50,24.69,4.44,INR,2026-12-05T23:59:59+05:30,setl_1,UTR1,UPI"


def screened(data: bytes, block: int = 1 << 20) -> LineScreen:
    screen = LineScreen()
    for start in range(0, len(data), block):
        screen.feed(data[start : start + block])
    screen.finish()
    return screen


def test_a_clean_file_leaves_only_its_first_line_to_the_database() -> None:
    screen = screened(b"\n".join([GOOD] * 5) + b"\n")
    assert (screen.everything, screen.suspects) == (False, [2])


@pytest.mark.parametrize(
    "broken",
    [
        GOOD.replace(b"1234.50", b"1234.5"),
        GOOD.replace(b"1234.50", b"01.00"),
        GOOD.replace(b"1234.50", b"-5.00"),
        GOOD.replace(b"1234.50", b"1" * 16 + b".00"),
        GOOD.replace(b",INR,", b",USD,"),
        GOOD.replace(b"payment", b"payout"),
        GOOD.replace(b",UPI", b",CASH"),
        GOOD.replace(b"24.69", b"-1.00"),
        GOOD.replace(b"4.44", b"x"),
        GOOD.replace(b"+05:30", b""),
        GOOD.replace(b"RG1", b""),
        GOOD.replace(b"RG1", b"R G1"),
        GOOD.replace(b"RG1", b"R" * 101),
        GOOD.replace(b"PAY_G1", b""),
        GOOD.replace(b"setl_1", b"setl_2"),
        GOOD.replace(b"UTR1", b"UTR2"),
        GOOD + b",extra",
        GOOD.rsplit(b",", 1)[0],
        b"",
        GOOD[:-3] + b"\xff",
        # Valid, but not in the strictest form: the database judges them.
        GOOD.replace(b"payment,1234.50", b"adjustment,-1234.50"),
        GOOD.replace(b"+05:30", b"+0530"),
    ],
)
def test_a_line_not_plainly_well_formed_is_a_suspect(broken: bytes) -> None:
    screen = screened(b"\n".join([GOOD, GOOD, broken, GOOD]) + b"\n")
    assert not screen.everything
    assert screen.suspects == [2, 4]


def test_line_numbers_hold_across_blocks_and_a_last_line_without_a_break() -> None:
    lines = [GOOD] * 50
    lines[30] = GOOD.replace(b"INR", b"USD")
    lines[49] = GOOD.replace(b"UPI", b"CASH")
    for block in (1, 7, 64, 1000):
        screen = screened(b"\n".join(lines), block)
        assert screen.suspects == [2, 32, 51], block


def test_windows_line_breaks_are_followed() -> None:
    screen = screened(b"\r\n".join([GOOD, GOOD, GOOD.replace(b"UPI", b"CASH")]) + b"\r\n")
    assert (screen.everything, screen.suspects) == (False, [2, 4])


@pytest.mark.parametrize(
    "data",
    [
        # A quoted field may hold a line break: lines and records no longer correspond.
        GOOD + b'\n"RG2",PAY_G2' + GOOD[10:] + b"\n",
        # A bare carriage return ends a line for PostgreSQL but not for the screen.
        GOOD + b"\r" + GOOD + b"\n",
        # The first line sets the shared fields; if it cannot, nothing can be cleared.
        b"nonsense\n" + GOOD + b"\n",
    ],
)
def test_a_file_the_screen_cannot_follow_is_judged_whole(data: bytes) -> None:
    assert screened(data).everything


def test_too_many_suspects_and_the_database_judges_everything() -> None:
    odd = GOOD.replace(b"+05:30", b"+0530")
    screen = screened(b"\n".join([GOOD] + [odd] * (LineScreen.MAX_SUSPECTS + 1)) + b"\n")
    assert screen.everything
