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

-- A time in the state is the array [year, day of year, hour, minute, second, nanosecond,
-- offset hours, offset minutes, offset seconds] (the offset parts carry its sign); stored times
-- are integer microseconds UTC.
UPDATE customers
SET next_screening_due = (
    SELECT (CAST(strftime('%s', printf('%04d-01-01', json_extract(due, '$[0]')),
                          '+' || (json_extract(due, '$[1]') - 1) || ' days') AS INTEGER)
            + json_extract(due, '$[2]') * 3600 + json_extract(due, '$[3]') * 60 + json_extract(due, '$[4]')
            - json_extract(due, '$[6]') * 3600 - json_extract(due, '$[7]') * 60 - json_extract(due, '$[8]'))
           * 1000000
           + json_extract(due, '$[5]') / 1000
    FROM (SELECT json_extract(customers.state, '$.aml.next_screening_due') AS due)
)
WHERE json_type(state, '$.aml.next_screening_due') = 'array';
