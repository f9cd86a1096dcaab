-- What the lifecycle workers and the verification link need to find without reading every
-- customer's state: the attempt behind a link token, customers due for re-screening, and a lease
-- so that concurrent recovery workers take disjoint sets of stuck attempts. Each column mirrors a
-- field of the serialized state and is written by every save.

ALTER TABLE verification_attempts
    ADD COLUMN link_token_hash      text,
    ADD COLUMN recovery_lease_until timestamptz;
CREATE UNIQUE INDEX verification_attempts_link_token_hash_key
    ON verification_attempts (link_token_hash) WHERE link_token_hash IS NOT NULL;

ALTER TABLE customers ADD COLUMN next_screening_due timestamptz;
-- Only VERIFIED customers are re-screened, so only they are indexed; the walk is global (the
-- worker serves every firm), most overdue first.
CREATE INDEX customers_rescreening_idx
    ON customers (next_screening_due, id) WHERE kyc_status = 'VERIFIED' AND next_screening_due IS NOT NULL;

-- Rows written before this migration: copy the fields from the stored state.
UPDATE verification_attempts AS attempt
SET link_token_hash = stored.value ->> 'link_token_hash'
FROM customers AS customer
CROSS JOIN LATERAL jsonb_array_elements(customer.state -> 'attempts') AS stored (value)
WHERE customer.id = attempt.customer_id
  AND (stored.value ->> 'number')::integer = attempt.number
  AND stored.value ->> 'link_token_hash' IS NOT NULL;

-- A time in the state is the array [year, day of year, hour, minute, second, nanosecond,
-- offset hours, offset minutes, offset seconds] (the offset parts carry its sign). Nanoseconds
-- are cut to microseconds, as the adapter cuts them, rather than rounded.
UPDATE customers
SET next_screening_due = (
        (make_date((due ->> 0)::integer, 1, 1) + ((due ->> 1)::integer - 1))::timestamp
        + make_interval(hours => (due ->> 2)::integer, mins => (due ->> 3)::integer)
        + ((due ->> 4)::bigint * 1000000 + (due ->> 5)::bigint / 1000) * interval '1 microsecond'
        - make_interval(hours => (due ->> 6)::integer, mins => (due ->> 7)::integer)
        - (due ->> 8)::integer * interval '1 second'
    ) AT TIME ZONE 'UTC'
FROM (SELECT id, state -> 'aml' -> 'next_screening_due' AS due FROM customers) AS stored
WHERE stored.id = customers.id AND jsonb_typeof(stored.due) = 'array';
