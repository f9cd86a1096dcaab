-- Push delivery and the ordered event feed.
--
-- Every notification is written to `notifications` in the same transaction as the change that
-- caused it, with the customer as saved (the state in the form `customers.state` holds). Writes
-- are serial (one writer at a time, `BEGIN IMMEDIATE`) and AUTOINCREMENT never hands out an id
-- twice, so ids become visible in increasing order: the feed is read in `id` order, and a reader
-- that resumes after the last id it saw misses nothing.
CREATE TABLE notifications (
    id          INTEGER NOT NULL CONSTRAINT notifications_pkey PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL CONSTRAINT notifications_event_id_key UNIQUE,
    firm_id     TEXT    NOT NULL CONSTRAINT notifications_firm_fkey REFERENCES firms (id),
    customer_id TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL
);
CREATE INDEX notifications_feed_idx ON notifications (firm_id, id);

ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_at INTEGER;
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at INTEGER;

-- One row per notification and endpoint that wanted it, written with the notification. A worker
-- leases the oldest unfinished row of each (endpoint, customer) only, so a customer's messages
-- reach an endpoint in order: `head` marks it while the endpoint is enabled (set when the row is
-- written with no unfinished one before it, passed on when the head finishes, cleared while the
-- endpoint is disabled).
CREATE TABLE webhook_messages (
    id              INTEGER NOT NULL CONSTRAINT webhook_messages_pkey PRIMARY KEY AUTOINCREMENT,
    firm_id         TEXT    NOT NULL,
    endpoint_id     TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    notification_id INTEGER NOT NULL CONSTRAINT webhook_messages_notification_fkey REFERENCES notifications (id),
    head            INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    CONSTRAINT webhook_messages_endpoint_fkey FOREIGN KEY (firm_id, endpoint_id) REFERENCES webhook_endpoints (firm_id, id)
);
-- Each endpoint's heads in the order they fall due: a claim reads a few of each endpoint's.
CREATE INDEX webhook_messages_due_idx ON webhook_messages (endpoint_id, next_attempt_at, id)
    WHERE head = 1 AND delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_messages_chain_idx ON webhook_messages (endpoint_id, customer_id, id)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_messages_leased_idx ON webhook_messages (endpoint_id)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND locked_until IS NOT NULL;
CREATE INDEX webhook_messages_replay_idx ON webhook_messages (endpoint_id, notification_id);
