-- Push delivery and the ordered event feed.
--
-- Every notification is written to `notifications` in the same statement as the change that
-- caused it, with the customer as saved. `txid` is the writing transaction's id: a reader serves
-- only rows of transactions older than the oldest one still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`), in `(txid, id)` order, so a transaction that
-- commits late with a lower id can never be passed by a reader's cursor.
CREATE TABLE notifications (
    id                  bigint      GENERATED ALWAYS AS IDENTITY CONSTRAINT notifications_pkey PRIMARY KEY,
    txid                xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id            uuid        NOT NULL DEFAULT gen_random_uuid() CONSTRAINT notifications_event_id_key UNIQUE,
    firm_id             uuid        NOT NULL CONSTRAINT notifications_firm_fkey REFERENCES firms (id),
    customer_id         uuid        NOT NULL,
    type                text        NOT NULL,
    message             jsonb       NOT NULL,
    state               jsonb       NOT NULL,
    occurred_at         timestamptz NOT NULL
);
CREATE INDEX notifications_feed_idx ON notifications (firm_id, txid, id);

ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret            text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN deleted_at                 timestamptz;

-- One row per notification and endpoint that wanted it, written with the notification. `head`
-- marks the oldest unfinished row of each (endpoint, customer) while the endpoint is enabled:
-- only heads are handed to workers, so a customer's messages reach an endpoint in order. A save
-- sets it on a new row when no earlier row of its chain is unfinished (reading the chain with a
-- share lock, so a delivery finishing at the same time is seen); finishing a head passes it on;
-- disabling an endpoint clears its heads and enabling it sets them again.
CREATE TABLE webhook_messages (
    id              bigint      GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_messages_pkey PRIMARY KEY,
    firm_id         uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    customer_id     uuid        NOT NULL,
    notification_id bigint      NOT NULL CONSTRAINT webhook_messages_notification_fkey REFERENCES notifications (id),
    head            boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    CONSTRAINT webhook_messages_endpoint_fkey FOREIGN KEY (firm_id, endpoint_id) REFERENCES webhook_endpoints (firm_id, id)
);
-- Each endpoint's heads in the order they fall due: a claim reads a few of each endpoint's.
CREATE INDEX webhook_messages_due_idx ON webhook_messages (endpoint_id, next_attempt_at, id)
    WHERE head AND delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_messages_chain_idx ON webhook_messages (endpoint_id, customer_id, id)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_messages_leased_idx ON webhook_messages (endpoint_id)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND locked_until IS NOT NULL;
CREATE INDEX webhook_messages_replay_idx ON webhook_messages (endpoint_id, notification_id);
