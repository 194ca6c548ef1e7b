"""The providers' settlement file format, and its validation.

One CSV per provider per IST day, UTF-8, with this header (README "Settlement files"):

    provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,settlement_id,utr,method

Amounts are rupees with exactly two decimals (no exponent, no thousands separator), never
negative except an adjustment's amount; they become integer paisa by dropping the point, never
through a float. `settled_at` is ISO 8601 with an offset. Every line carries the same
settlement_id and utr (one settlement per provider per day).

Files can have millions of lines, so PostgreSQL reads them: the header is checked here, the
rest is streamed with COPY into a staging table of text columns (`STAGING`, one per run,
created and dropped inside the run's transaction: service roles may not create temporary
tables), and `VIOLATION` finds the first line breaking a rule in one pass. Either way the
error names the file's line number (the header is line 1) and the rule, and the caller's
transaction is rolled back: a file is taken whole or not at all.
"""

from __future__ import annotations

import re

import asyncpg

HEADER = (
    "provider_reference",
    "merchant_reference",
    "type",
    "amount",
    "fee",
    "tax",
    "currency",
    "settled_at",
    "settlement_id",
    "utr",
    "method",
)
LINE_TYPES = ("payment", "refund", "chargeback", "adjustment")
METHODS = frozenset({"UPI", "CARD", "WALLET", "NET_BANKING"})
CURRENCY = "INR"
# Provider references, our ids, settlement ids and UTRs: printable, no spaces, bounded.
REFERENCE_RULE = "1 to 100 letters, digits or _.:/- characters"
# Counted repetitions ({1,100}) cost PostgreSQL's regex engine ten times more than `+` with a
# separate length check, which matters at millions of lines.
_REFERENCE = r"^[A-Za-z0-9_.:/-]+$"
_MAX_REFERENCE = 100
_RUPEES = r"^(0|[1-9][0-9]*)\.[0-9][0-9]$"
_SIGNED_RUPEES = r"^-?(0|[1-9][0-9]*)\.[0-9][0-9]$"
# 15 digits of rupees: sums of a day's lines stay far inside bigint paisa.
_MAX_RUPEES = 18
_MAX_HEADER_BYTES = 4096


class MalformedFile(ValueError):
    """The file breaks the format at `line_number` (1 = the header) for `reason`."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.line_number = line_number
        self.reason = reason


def check_header(first_line: bytes) -> None:
    """The header line (without its line break), exactly as HEADER."""
    text = first_line.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r")
    if not text.strip():
        raise MalformedFile(1, "the file is empty: the header line is missing")
    if tuple(field.strip() for field in text.split(",")) != HEADER:
        raise MalformedFile(1, f"the header must be exactly: {','.join(HEADER)}")


def split_header(first_block: bytes) -> tuple[bytes, bytes]:
    """(the header line, the rest of the block after its line break)."""
    head, newline, rest = first_block.partition(b"\n")
    if not newline and len(head) > _MAX_HEADER_BYTES:
        raise MalformedFile(1, "the header line is too long")
    return head, rest


# The data lines, as read (NULL for an empty field); line_number counts from 2 (the header is 1).
# Unlogged: it lives only inside the run's transaction, so nothing needs it after a crash.
STAGING = """
CREATE UNLOGGED TABLE incoming_lines (
    line_number         bigint GENERATED ALWAYS AS IDENTITY (START WITH 2) PRIMARY KEY,
    provider_reference  text,
    merchant_reference  text,
    type                text,
    amount              text,
    fee                 text,
    tax                 text,
    currency            text,
    settled_at          text,
    settlement_id       text,
    utr                 text,
    method              text
)
"""
# The staging table's name in the statements here, replaced by each run's own (`staged`).
STAGING_TABLE = "incoming_lines"


def staging_table(file_id: str) -> str:
    """The run's own staging table: its file id is a prefix and a ULID, safe as a name."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,50}", file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return f"incoming_{file_id.lower()}"


def staged(statement: str, table: str) -> str:
    """`statement` reading the run's staging table."""
    return statement.replace(STAGING_TABLE, table)


def _types() -> str:
    return ", ".join(f"'{t}'" for t in LINE_TYPES)


def _methods() -> str:
    return ", ".join(f"'{m}'" for m in sorted(METHODS))


def _amount_rule(field: str) -> str:
    """The rule as an SQL string's content (its quote doubled)."""
    sign = "; only an adjustment''s amount may be negative" if field == "amount" else ""
    return f"{field} must be rupees with exactly two decimals, e.g. 1234.50{sign}"


def _bad_reference(column: str) -> str:
    return f"(coalesce({column}, '') !~ '{_REFERENCE}' OR length({column}) > {_MAX_REFERENCE})"


def _bad_rupees(column: str, pattern: str = _RUPEES) -> str:
    return f"(coalesce({column}, '') !~ {pattern} OR length({column}) > {_MAX_RUPEES})"


_AMOUNT_PATTERN = f"CASE WHEN i.type = 'adjustment' THEN '{_SIGNED_RUPEES}' ELSE '{_RUPEES}' END"
_TIME_RULE = "settled_at must be an ISO 8601 time with an offset, e.g. 2026-12-05T18:30:00+05:30"

_FIELD = "[A-Za-z0-9_.:/-]+"
_AMOUNT_DIGITS = "(0|[1-9][0-9]*)[.][0-9][0-9]"
# Most lines are well formed and repeat the first line's settlement and time: one regular
# expression over their own fields (and byte lengths: a valid field is ASCII) clears them, and
# only the rest take the rule-by-rule path, which names the rule. The first line always does,
# so the shared fields are checked once. (Counting characters with length() costs more than
# the expression here.)
_WELL_FORMED = f"""
    i.line_number > 2
    AND i.settlement_id = f.settlement_id AND i.utr = f.utr AND i.settled_at = f.settled_at
    AND i.currency = '{CURRENCY}' AND i.type IN ({", ".join(f"'{t}'" for t in LINE_TYPES)})
    AND i.method IN ({", ".join(f"'{m}'" for m in sorted(METHODS))})
    AND octet_length(i.provider_reference) <= {_MAX_REFERENCE}
    AND octet_length(i.merchant_reference) <= {_MAX_REFERENCE}
    AND octet_length(i.amount) <= {_MAX_RUPEES} AND octet_length(i.fee) <= {_MAX_RUPEES}
    AND octet_length(i.tax) <= {_MAX_RUPEES}
    AND concat(i.provider_reference, ',', i.merchant_reference, ',', i.amount, ',', i.fee, ',',
               i.tax)
        ~ '^{_FIELD},{_FIELD},{_AMOUNT_DIGITS},{_AMOUNT_DIGITS},{_AMOUNT_DIGITS}$'
"""

# The first line that breaks a rule, and which rule (in the order a reader checks a line),
# among the lines `{lines}` selects. Built from this module's constants only: no input
# reaches the text.
_VIOLATION = f"""
WITH first_line AS (
    SELECT settlement_id, utr, settled_at FROM incoming_lines ORDER BY line_number LIMIT 1
)
SELECT line_number, problem FROM (
    SELECT i.line_number, CASE
        WHEN {_WELL_FORMED} THEN NULL
        WHEN {_bad_reference("i.provider_reference")}
            THEN 'provider_reference must be {REFERENCE_RULE}'
        WHEN coalesce(i.type, '') NOT IN ({_types()})
            THEN 'type must be one of {", ".join(LINE_TYPES)}'
        WHEN {_bad_reference("i.merchant_reference")}
             AND NOT (i.type = 'adjustment' AND i.merchant_reference IS NULL)
            THEN 'merchant_reference must be {REFERENCE_RULE}'
        WHEN {_bad_rupees("i.amount", _AMOUNT_PATTERN)}
            THEN '{_amount_rule("amount")}'
        WHEN {_bad_rupees("i.fee", f"'{_RUPEES}'")} THEN '{_amount_rule("fee")}'
        WHEN {_bad_rupees("i.tax", f"'{_RUPEES}'")} THEN '{_amount_rule("tax")}'
        WHEN i.currency IS DISTINCT FROM '{CURRENCY}' THEN 'currency must be {CURRENCY}'
        WHEN coalesce(i.settled_at, '') !~ '^[0-9-]+[T ][0-9:.]+([+-][0-9:]+|Z)$'
             OR NOT pg_input_is_valid(i.settled_at, 'timestamptz')
            THEN '{_TIME_RULE}'
        WHEN {_bad_reference("i.settlement_id")} THEN 'settlement_id must be {REFERENCE_RULE}'
        WHEN {_bad_reference("i.utr")} THEN 'utr must be {REFERENCE_RULE}'
        WHEN (i.settlement_id, i.utr) IS DISTINCT FROM (f.settlement_id, f.utr)
            THEN 'settlement_id and utr must be the same on every line (the first line has '
                 || f.settlement_id || ' / ' || f.utr || ')'
        WHEN coalesce(i.method, '') NOT IN ({_methods()})
            THEN 'method must be one of {", ".join(sorted(METHODS))}'
    END AS problem
    FROM incoming_lines i CROSS JOIN first_line f
    {{lines}}
) checked
WHERE problem IS NOT NULL
ORDER BY line_number
LIMIT 1
"""  # noqa: S608
# Every line of the file.
VIOLATION = _VIOLATION.replace("{lines}", "")
# Only the lines numbered in $1 (bigint[]): those LineScreen could not clear.
VIOLATION_AMONG = _VIOLATION.replace("{lines}", "WHERE i.line_number = ANY($1::bigint[])")


class LineScreen:
    """Clears, while the file streams to PostgreSQL, the lines that are plainly well formed, so
    that the database judges rule by rule only the others (`suspects`).

    A plainly well-formed line is what `_WELL_FORMED` accepts, as one regular expression over
    the raw bytes: the first data line's settled_at, settlement_id and utr repeated, every
    other field in its strictest form, no quoting. The screen runs in the reading process,
    beside the database's work on the previous block, so most of the validation costs no time
    on the database's critical path. A file it cannot follow line for line (quotes, which may
    hide a line break; a bare carriage return; too many suspects) is judged whole by the
    database (`everything`), as it would be without the screen: the screen only ever skips
    lines the database would have cleared too.
    """

    MAX_SUSPECTS = 10_000
    _FIELD = rb"[A-Za-z0-9_.:/-]{1,%d}" % _MAX_REFERENCE
    _AMOUNT = rb"(?:0|[1-9][0-9]{0,%d})\.[0-9][0-9]" % (_MAX_RUPEES - 4)
    _FIRST = re.compile(rb"(?:[^,]*,){7}([^,]*),([^,]*),([^,]*),[^,]*\r?")

    def __init__(self) -> None:
        self.suspects: list[int] = []
        self.everything = False
        self._line = 2  # the number of the next line to screen (the header is line 1)
        self._carry = b""
        self._fast: re.Pattern[bytes] | None = None

    def _pattern(self, first_line: bytes) -> re.Pattern[bytes] | None:
        shared = self._FIRST.fullmatch(first_line)
        if shared is None:
            return None
        settled_at, settlement_id, utr = (re.escape(field) for field in shared.groups())
        types = b"|".join(t.encode() for t in LINE_TYPES)
        methods = b"|".join(m.encode() for m in sorted(METHODS))
        return re.compile(
            b"%s,%s,(?:%s),%s,%s,%s,%s,%s,%s,%s,(?:%s)\r?"
            % (
                self._FIELD,
                self._FIELD,
                types,
                self._AMOUNT,
                self._AMOUNT,
                self._AMOUNT,
                CURRENCY.encode(),
                settled_at,
                settlement_id,
                utr,
                methods,
            )
        )

    def feed(self, block: bytes) -> None:
        """The next block of the file after its header line."""
        if self.everything:
            return
        if b'"' in block or block.count(b"\r") != block.count(b"\r\n"):
            self.everything = True
            return
        text = self._carry + block
        end = text.rfind(b"\n")
        if end < 0:
            self._carry = text
            return
        self._carry = text[end + 1 :]
        self._screen(text[:end].split(b"\n"))

    def finish(self) -> None:
        """The end of the file: its last line may have no line break."""
        if self._carry and not self.everything:
            self._screen([self._carry])
        self._carry = b""

    def _screen(self, lines: list[bytes]) -> None:
        if self._fast is None:
            # The first line is always judged by the database: it sets the shared fields.
            self.suspects.append(self._line)
            self._fast = self._pattern(lines[0])
            if self._fast is None:
                self.everything = True
                return
            self._line += 1
            lines = lines[1:]
        match = self._fast.fullmatch
        start = self._line
        self.suspects.extend(n for n, line in enumerate(lines, start) if match(line) is None)
        self._line = start + len(lines)
        if len(self.suspects) > self.MAX_SUSPECTS:
            self.everything = True


_COPY_LINE = re.compile(r"\bline (\d+)")


def copy_error(exc: asyncpg.PostgresError) -> MalformedFile:
    """A COPY that could not read the file, as the line it stopped at (COPY counts the data
    lines it was given from 1; the file's header is line 1)."""
    where = " ".join(filter(None, [getattr(exc, "where", None), getattr(exc, "context", None)]))
    found = _COPY_LINE.search(where)
    line_number = int(found.group(1)) + 1 if found else 2
    message = str(exc.args[0] if exc.args else exc)
    if "missing data for column" in message or "extra data after last" in message:
        reason = f"expected {len(HEADER)} comma-separated fields"
    elif "invalid byte sequence" in message:
        reason = "not valid UTF-8"
    elif "unterminated CSV quoted field" in message:
        reason = "not valid CSV: a quoted field is not closed"
    else:
        reason = f"not valid CSV: {message}"
    return MalformedFile(line_number, reason)
