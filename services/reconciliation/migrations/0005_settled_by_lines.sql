-- Which line settled each payment or refund is a property of that line (`settles`), kept
-- unique per item by a partial index, instead of a second table written line by line: a
-- million-line file wrote a million rows twice. `settled_items` stays, as a view, the name
-- the queries use.
ALTER TABLE settlement_lines ADD COLUMN settles boolean NOT NULL DEFAULT false;

UPDATE settlement_lines l SET settles = true
FROM settled_items s
WHERE s.settlement_file_id = l.settlement_file_id AND s.line_number = l.line_number;

DROP TABLE settled_items;

-- At most one settling line per item (its refund id, or its payment id for a payment line):
-- any later line for the item is a DUPLICATE.
CREATE UNIQUE INDEX settlement_lines_settled_idx
    ON settlement_lines ((coalesce(refund_id, payment_id))) WHERE settles;

CREATE VIEW settled_items AS
SELECT coalesce(refund_id, payment_id) AS item_id, settlement_file_id, line_number
FROM settlement_lines WHERE settles;
