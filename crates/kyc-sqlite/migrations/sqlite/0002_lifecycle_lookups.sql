-- What the lifecycle workers and the verification link need to find without reading every
-- customer's state: the attempt behind a link token, customers due for re-screening, and a lease
-- so that concurrent recovery workers take disjoint sets of stuck attempts. Each column mirrors a
-- field of the serialized state and is written by every save.

ALTER TABLE verification_attempts ADD COLUMN link_token_hash TEXT;
ALTER TABLE verification_attempts ADD COLUMN recovery_lease_until INTEGER;
CREATE UNIQUE INDEX verification_attempts_link_token_hash_key
    ON verification_attempts (link_token_hash) WHERE link_token_hash IS NOT NULL;

ALTER TABLE customers ADD COLUMN next_screening_due INTEGER;
-- Only VERIFIED customers are re-screened, so only they are indexed; the walk is global (the
-- worker serves every firm), most overdue first.
CREATE INDEX customers_rescreening_idx
    ON customers (next_screening_due, id) WHERE kyc_status = 'VERIFIED' AND next_screening_due IS NOT NULL;

-- Rows written before this migration: copy the fields from the stored state.
UPDATE verification_attempts
SET link_token_hash = (
    SELECT json_extract(stored.value, '$.link_token_hash')
    FROM customers AS customer, json_each(customer.state, '$.attempts') AS stored
    WHERE customer.id = verification_attempts.customer_id
      AND json_extract(stored.value, '$.number') = verification_attempts.number
);

-- Times in the state read "2026-01-31 12:00:00.123456789 +00:00:00" (subsecond digits: one or
-- more). Stored times are integer microseconds UTC: whole seconds from the first 19 characters,
-- minus the offset (the last 9), plus the first six subsecond digits.
UPDATE customers
SET next_screening_due = (
    SELECT (CAST(strftime('%s', substr(due, 1, 19)) AS INTEGER)
            - (CASE substr(due, -9, 1) WHEN '-' THEN -1 ELSE 1 END)
              * (CAST(substr(due, -8, 2) AS INTEGER) * 3600
                 + CAST(substr(due, -5, 2) AS INTEGER) * 60
                 + CAST(substr(due, -2, 2) AS INTEGER))) * 1000000
           + CAST(substr(substr(due, 21, length(due) - 30) || '000000', 1, 6) AS INTEGER)
    FROM (SELECT json_extract(state, '$.aml.next_screening_due') AS due)
)
WHERE json_extract(state, '$.aml.next_screening_due') IS NOT NULL;
