-- The outbox worker leases the oldest undelivered entries (ORDER BY id). Without an index of
-- exactly those, in that order, a lease walked the primary key from the first entry ever
-- written, through every delivered one: a lease took longer with every entry delivered.
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE delivered_at IS NULL;
