-- The storage schema of the embedded backend. Times are INTEGER microseconds since the Unix epoch
-- (UTC), so they sort exactly as Postgres timestamptz does; ids are hyphenated lowercase UUID text.

CREATE TABLE firms (
    id          TEXT    NOT NULL CONSTRAINT firms_pkey PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id               TEXT    NOT NULL CONSTRAINT users_pkey PRIMARY KEY,
    firm_id          TEXT    NOT NULL CONSTRAINT users_firm_fkey REFERENCES firms (id),
    email            TEXT    NOT NULL,
    email_normalized TEXT    NOT NULL CONSTRAINT users_email_key UNIQUE,
    role             TEXT    NOT NULL CONSTRAINT users_role_check CHECK (role IN ('staff', 'compliance_officer', 'admin')),
    password_hash    TEXT    NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX users_firm_idx ON users (firm_id);

CREATE TABLE sessions (
    token_hash   TEXT    NOT NULL CONSTRAINT sessions_pkey PRIMARY KEY,
    user_id      TEXT    NOT NULL CONSTRAINT sessions_user_fkey REFERENCES users (id) ON DELETE CASCADE,
    firm_id      TEXT    NOT NULL CONSTRAINT sessions_firm_fkey REFERENCES firms (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE api_keys (
    id          TEXT    NOT NULL CONSTRAINT api_keys_pkey PRIMARY KEY,
    firm_id     TEXT    NOT NULL CONSTRAINT api_keys_firm_fkey REFERENCES firms (id),
    label       TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    prefix      TEXT    NOT NULL,
    last4       TEXT    NOT NULL,
    sha256      TEXT    NOT NULL CONSTRAINT api_keys_sha256_key UNIQUE,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX api_keys_firm_idx ON api_keys (firm_id, created_at);

CREATE TABLE customers (
    id               TEXT    NOT NULL CONSTRAINT customers_pkey PRIMARY KEY,
    firm_id          TEXT    NOT NULL CONSTRAINT customers_firm_fkey REFERENCES firms (id),
    external_id      TEXT,
    email_normalized TEXT    NOT NULL,
    kyc_status       TEXT    NOT NULL,
    aml_status       TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    version          INTEGER NOT NULL CONSTRAINT customers_version_check CHECK (version >= 1),
    state            TEXT    NOT NULL,
    CONSTRAINT customers_firm_id_key UNIQUE (firm_id, id)
);
CREATE UNIQUE INDEX customers_external_id_key ON customers (firm_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX customers_created_idx ON customers (firm_id, created_at, id);
CREATE INDEX customers_updated_idx ON customers (firm_id, updated_at, id);
CREATE INDEX customers_kyc_status_idx ON customers (firm_id, kyc_status, created_at, id);
CREATE INDEX customers_aml_status_idx ON customers (firm_id, aml_status, created_at, id);
CREATE INDEX customers_email_idx ON customers (firm_id, email_normalized, created_at);

CREATE TABLE verification_attempts (
    firm_id          TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    number           INTEGER NOT NULL,
    external_user_id TEXT    NOT NULL CONSTRAINT verification_attempts_external_user_id_key UNIQUE,
    applicant_id     TEXT,
    phase            TEXT    NOT NULL,
    claimed_at       INTEGER NOT NULL,
    CONSTRAINT verification_attempts_pkey PRIMARY KEY (customer_id, number),
    CONSTRAINT verification_attempts_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES customers (firm_id, id)
);
CREATE UNIQUE INDEX verification_attempts_applicant_id_key ON verification_attempts (applicant_id) WHERE applicant_id IS NOT NULL;
CREATE INDEX verification_attempts_starting_idx ON verification_attempts (claimed_at) WHERE phase = 'starting';

-- The audit trail. Append-only: the triggers below refuse any change to a recorded event.
CREATE TABLE events (
    sequence           INTEGER NOT NULL CONSTRAINT events_pkey PRIMARY KEY AUTOINCREMENT,
    id                 TEXT    NOT NULL CONSTRAINT events_id_key UNIQUE,
    firm_id            TEXT    NOT NULL,
    customer_id        TEXT    NOT NULL,
    at                 INTEGER NOT NULL,
    actor              TEXT    NOT NULL,
    change             TEXT    NOT NULL,
    note               TEXT,
    provider_event_key TEXT,
    CONSTRAINT events_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES customers (firm_id, id)
);
CREATE INDEX events_customer_idx ON events (firm_id, customer_id, sequence);
CREATE INDEX events_firm_idx ON events (firm_id, sequence);

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- Provider events already seen: applied with a save, or recorded as orphaned. Provider events
-- carry no firm, so firm_id is known only for applied ones.
CREATE TABLE provider_events (
    key         TEXT    NOT NULL CONSTRAINT provider_events_pkey PRIMARY KEY,
    firm_id     TEXT,
    outcome     TEXT    NOT NULL CONSTRAINT provider_events_outcome_check CHECK (outcome IN ('applied', 'orphaned')),
    payload     TEXT,
    recorded_at INTEGER NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER NOT NULL CONSTRAINT outbox_pkey PRIMARY KEY AUTOINCREMENT,
    firm_id         TEXT    NOT NULL CONSTRAINT outbox_firm_fkey REFERENCES firms (id),
    message         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE idempotency_records (
    firm_id       TEXT    NOT NULL CONSTRAINT idempotency_records_firm_fkey REFERENCES firms (id),
    method        TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    state         TEXT    NOT NULL CONSTRAINT idempotency_records_state_check CHECK (state IN ('in_progress', 'completed')),
    status        INTEGER,
    headers       TEXT,
    body          BLOB,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (firm_id, method, path, key)
);
CREATE INDEX idempotency_records_expiry_idx ON idempotency_records (expires_at);

CREATE TABLE webhook_endpoints (
    id          TEXT    NOT NULL CONSTRAINT webhook_endpoints_pkey PRIMARY KEY,
    firm_id     TEXT    NOT NULL CONSTRAINT webhook_endpoints_firm_fkey REFERENCES firms (id),
    url         TEXT    NOT NULL,
    description TEXT,
    event_types TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    disabled_at INTEGER,
    created_at  INTEGER NOT NULL,
    CONSTRAINT webhook_endpoints_firm_id_key UNIQUE (firm_id, id)
);

CREATE TABLE webhook_deliveries (
    id              INTEGER NOT NULL CONSTRAINT webhook_deliveries_pkey PRIMARY KEY AUTOINCREMENT,
    firm_id         TEXT    NOT NULL,
    endpoint_id     TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    attempt         INTEGER NOT NULL,
    attempted_at    INTEGER NOT NULL,
    response_status INTEGER,
    error           TEXT,
    duration_ms     INTEGER NOT NULL,
    CONSTRAINT webhook_deliveries_endpoint_fkey FOREIGN KEY (firm_id, endpoint_id) REFERENCES webhook_endpoints (firm_id, id)
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (firm_id, endpoint_id, id);
