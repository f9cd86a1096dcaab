-- The upsert's look-up by email (`WHERE firm_id = ? AND email_normalized = ? ORDER BY created_at,
-- id LIMIT 1`) must be answered from this index. Without `id` in it the index could not deliver
-- the statement's order, and SQLite, which has no statistics here (nothing runs ANALYZE), chose
-- customers_created_idx instead, for its order: a walk over every customer of the firm for each
-- email that matches nobody, which is every create.

DROP INDEX customers_email_idx;
CREATE INDEX customers_email_idx ON customers (firm_id, email_normalized, created_at, id);
