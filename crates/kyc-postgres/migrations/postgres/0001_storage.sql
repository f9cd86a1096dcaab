-- The storage schema of the production backend. Every tenant table carries firm_id, and every
-- query of a tenant table filters on it; the composite keys (firm_id, id) let child tables
-- reference their parent within the same firm only.

CREATE TABLE firms (
    id          uuid        NOT NULL CONSTRAINT firms_pkey PRIMARY KEY,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    id               uuid        NOT NULL CONSTRAINT users_pkey PRIMARY KEY,
    firm_id          uuid        NOT NULL CONSTRAINT users_firm_fkey REFERENCES firms (id),
    email            text        NOT NULL,
    -- Login asks for an email only, so an email identifies one user across all firms.
    email_normalized text        NOT NULL CONSTRAINT users_email_key UNIQUE,
    role             text        NOT NULL CONSTRAINT users_role_check CHECK (role IN ('staff', 'compliance_officer', 'admin')),
    password_hash    text        NOT NULL,
    created_at       timestamptz NOT NULL,
    CONSTRAINT users_firm_id_key UNIQUE (firm_id, id)
);

CREATE TABLE sessions (
    token_hash   text        NOT NULL CONSTRAINT sessions_pkey PRIMARY KEY,
    user_id      uuid        NOT NULL,
    firm_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    CONSTRAINT sessions_user_fkey FOREIGN KEY (firm_id, user_id) REFERENCES users (firm_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user_idx ON sessions (firm_id, user_id);

CREATE TABLE api_keys (
    id          uuid        NOT NULL CONSTRAINT api_keys_pkey PRIMARY KEY,
    firm_id     uuid        NOT NULL CONSTRAINT api_keys_firm_fkey REFERENCES firms (id),
    label       text        NOT NULL,
    scopes      text[]      NOT NULL,
    prefix      text        NOT NULL,
    last4       text        NOT NULL,
    sha256      text        NOT NULL CONSTRAINT api_keys_sha256_key UNIQUE,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL
);
CREATE INDEX api_keys_firm_idx ON api_keys (firm_id, created_at);

CREATE TABLE customers (
    id               uuid        NOT NULL CONSTRAINT customers_pkey PRIMARY KEY,
    firm_id          uuid        NOT NULL CONSTRAINT customers_firm_fkey REFERENCES firms (id),
    external_id      text,
    email_normalized text        NOT NULL,
    kyc_status       text        NOT NULL,
    aml_status       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL CONSTRAINT customers_version_check CHECK (version >= 1),
    state            jsonb       NOT NULL,
    CONSTRAINT customers_firm_id_key UNIQUE (firm_id, id)
);
CREATE UNIQUE INDEX customers_external_id_key ON customers (firm_id, external_id) WHERE external_id IS NOT NULL;
-- The CRM list walks (created_at, id); polling with updated_since walks (updated_at, id).
CREATE INDEX customers_created_idx ON customers (firm_id, created_at, id);
CREATE INDEX customers_updated_idx ON customers (firm_id, updated_at, id);
CREATE INDEX customers_kyc_status_idx ON customers (firm_id, kyc_status, created_at, id);
CREATE INDEX customers_aml_status_idx ON customers (firm_id, aml_status, created_at, id);
CREATE INDEX customers_email_idx ON customers (firm_id, email_normalized, created_at);

CREATE TABLE verification_attempts (
    firm_id          uuid        NOT NULL,
    customer_id      uuid        NOT NULL,
    number           integer     NOT NULL,
    external_user_id text        NOT NULL CONSTRAINT verification_attempts_external_user_id_key UNIQUE,
    applicant_id     text,
    phase            text        NOT NULL CONSTRAINT verification_attempts_phase_check CHECK (phase IN ('starting', 'open', 'voided', 'closed')),
    claimed_at       timestamptz NOT NULL,
    CONSTRAINT verification_attempts_pkey PRIMARY KEY (customer_id, number),
    CONSTRAINT verification_attempts_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES customers (firm_id, id)
);
CREATE UNIQUE INDEX verification_attempts_applicant_id_key ON verification_attempts (applicant_id) WHERE applicant_id IS NOT NULL;
CREATE INDEX verification_attempts_starting_idx ON verification_attempts (claimed_at) WHERE phase = 'starting';

-- The audit trail. Append-only: the trigger below refuses any change to a recorded event.
CREATE TABLE events (
    sequence           bigint      GENERATED ALWAYS AS IDENTITY CONSTRAINT events_pkey PRIMARY KEY,
    id                 uuid        NOT NULL CONSTRAINT events_id_key UNIQUE,
    firm_id            uuid        NOT NULL,
    customer_id        uuid        NOT NULL,
    at                 timestamptz NOT NULL,
    actor              jsonb       NOT NULL,
    change             jsonb       NOT NULL,
    note               text,
    provider_event_key text,
    CONSTRAINT events_customer_fkey FOREIGN KEY (firm_id, customer_id) REFERENCES customers (firm_id, id)
);
CREATE INDEX events_customer_idx ON events (firm_id, customer_id, sequence);
CREATE INDEX events_firm_idx ON events (firm_id, sequence);

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Provider events already seen: applied with a save, or recorded as orphaned. Provider events
-- carry no firm, so firm_id is known only for applied ones.
CREATE TABLE provider_events (
    key         text        NOT NULL CONSTRAINT provider_events_pkey PRIMARY KEY,
    firm_id     uuid        CONSTRAINT provider_events_firm_fkey REFERENCES firms (id),
    outcome     text        NOT NULL CONSTRAINT provider_events_outcome_check CHECK (outcome IN ('applied', 'orphaned')),
    payload     jsonb,
    recorded_at timestamptz NOT NULL
);

CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY CONSTRAINT outbox_pkey PRIMARY KEY,
    firm_id         uuid        NOT NULL CONSTRAINT outbox_firm_fkey REFERENCES firms (id),
    message         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE idempotency_records (
    firm_id       uuid        NOT NULL CONSTRAINT idempotency_records_firm_fkey REFERENCES firms (id),
    method        text        NOT NULL,
    path          text        NOT NULL,
    key           text        NOT NULL,
    fingerprint   text        NOT NULL,
    state         text        NOT NULL CONSTRAINT idempotency_records_state_check CHECK (state IN ('in_progress', 'completed')),
    status        integer,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (firm_id, method, path, key)
);
CREATE INDEX idempotency_records_expiry_idx ON idempotency_records (expires_at);

CREATE TABLE webhook_endpoints (
    id          uuid        NOT NULL CONSTRAINT webhook_endpoints_pkey PRIMARY KEY,
    firm_id     uuid        NOT NULL CONSTRAINT webhook_endpoints_firm_fkey REFERENCES firms (id),
    url         text        NOT NULL,
    description text,
    event_types text[]      NOT NULL,
    secret      text        NOT NULL,
    disabled_at timestamptz,
    created_at  timestamptz NOT NULL,
    CONSTRAINT webhook_endpoints_firm_id_key UNIQUE (firm_id, id)
);

CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY CONSTRAINT webhook_deliveries_pkey PRIMARY KEY,
    firm_id         uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    message_id      text        NOT NULL,
    event_type      text        NOT NULL,
    attempt         integer     NOT NULL,
    attempted_at    timestamptz NOT NULL,
    response_status integer,
    error           text,
    duration_ms     bigint      NOT NULL,
    CONSTRAINT webhook_deliveries_endpoint_fkey FOREIGN KEY (firm_id, endpoint_id) REFERENCES webhook_endpoints (firm_id, id)
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (firm_id, endpoint_id, id);
