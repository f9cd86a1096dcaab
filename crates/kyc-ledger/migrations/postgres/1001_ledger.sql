-- The credits ledger: double-entry and append-only.
--
-- `ledger_operations` is one row per operation (grant, reserve, post, void, refund): the statement.
-- `ledger_entries` holds the operation's postings to the firm's accounts; every operation's entries
-- sum to zero. Both tables refuse UPDATE and DELETE: a mistake is corrected by a new operation.
-- `ledger_firms` is the firm's account row: it is locked (SELECT ... FOR UPDATE) by every mutating
-- transaction, which serialises one firm's operations across processes, and it caches the running
-- balances, updated in the same transaction as the entries they summarise.

CREATE TABLE ledger_firms (
    firm_id UUID NOT NULL,
    daily_cap_credits BIGINT,
    available_credits BIGINT NOT NULL DEFAULT 0,
    held_credits BIGINT NOT NULL DEFAULT 0,
    spent_credits BIGINT NOT NULL DEFAULT 0,
    funded_credits BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT ledger_firms_pkey PRIMARY KEY (firm_id),
    CONSTRAINT ledger_firms_daily_cap_not_negative CHECK (daily_cap_credits IS NULL OR daily_cap_credits >= 0),
    CONSTRAINT ledger_firms_available_not_negative CHECK (available_credits >= 0),
    CONSTRAINT ledger_firms_held_not_negative CHECK (held_credits >= 0),
    CONSTRAINT ledger_firms_spent_not_negative CHECK (spent_credits >= 0),
    CONSTRAINT ledger_firms_funded_not_positive CHECK (funded_credits <= 0)
);

CREATE TABLE ledger_operations (
    -- Drawn while the firm's row is locked, so within a firm it follows commit order: the
    -- statement pages on it without skipping or repeating an operation.
    seq BIGSERIAL NOT NULL,
    id UUID NOT NULL,
    firm_id UUID NOT NULL,
    kind TEXT NOT NULL,
    credits BIGINT NOT NULL,
    available_delta BIGINT NOT NULL,
    customer_id UUID,
    attempt BIGINT,
    reference TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT ledger_operations_pkey PRIMARY KEY (seq),
    CONSTRAINT ledger_operations_id_key UNIQUE (id),
    CONSTRAINT ledger_operations_firm_fkey FOREIGN KEY (firm_id) REFERENCES ledger_firms (firm_id),
    CONSTRAINT ledger_operations_kind_known CHECK (kind IN ('grant', 'reserve', 'post', 'void', 'refund')),
    CONSTRAINT ledger_operations_credits_positive CHECK (credits > 0),
    CONSTRAINT ledger_operations_hold_complete CHECK ((customer_id IS NULL) = (attempt IS NULL))
);

CREATE INDEX ledger_operations_firm_seq_idx ON ledger_operations (firm_id, seq DESC);
CREATE INDEX ledger_operations_hold_idx ON ledger_operations (firm_id, customer_id, attempt);

CREATE TABLE ledger_entries (
    id BIGSERIAL NOT NULL,
    operation_id UUID NOT NULL,
    firm_id UUID NOT NULL,
    account TEXT NOT NULL,
    amount_credits BIGINT NOT NULL,
    CONSTRAINT ledger_entries_pkey PRIMARY KEY (id),
    CONSTRAINT ledger_entries_operation_fkey FOREIGN KEY (operation_id) REFERENCES ledger_operations (id),
    CONSTRAINT ledger_entries_account_known CHECK (account IN ('available', 'held', 'spent', 'funding')),
    CONSTRAINT ledger_entries_amount_not_zero CHECK (amount_credits <> 0)
);

CREATE INDEX ledger_entries_firm_account_idx ON ledger_entries (firm_id, account);
CREATE INDEX ledger_entries_operation_idx ON ledger_entries (operation_id);

CREATE TABLE ledger_holds (
    firm_id UUID NOT NULL,
    customer_id UUID NOT NULL,
    attempt BIGINT NOT NULL,
    credits BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    CONSTRAINT ledger_holds_pkey PRIMARY KEY (firm_id, customer_id, attempt),
    CONSTRAINT ledger_holds_firm_fkey FOREIGN KEY (firm_id) REFERENCES ledger_firms (firm_id),
    CONSTRAINT ledger_holds_state_known CHECK (state IN ('pending', 'posted', 'voided')),
    CONSTRAINT ledger_holds_credits_positive CHECK (credits > 0),
    CONSTRAINT ledger_holds_attempt_positive CHECK (attempt > 0),
    CONSTRAINT ledger_holds_resolved_when_not_pending CHECK ((state = 'pending') = (resolved_at IS NULL))
);

CREATE INDEX ledger_holds_pending_idx ON ledger_holds (created_at) WHERE state = 'pending';
CREATE INDEX ledger_holds_firm_created_idx ON ledger_holds (firm_id, created_at);

CREATE TABLE ledger_idempotency (
    firm_id UUID NOT NULL,
    key TEXT NOT NULL,
    operation TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT ledger_idempotency_pkey PRIMARY KEY (firm_id, key),
    CONSTRAINT ledger_idempotency_firm_fkey FOREIGN KEY (firm_id) REFERENCES ledger_firms (firm_id)
);

-- Entries and operations are history: refuse any rewrite, whoever connects.
CREATE FUNCTION ledger_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger history is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_rewrite();

CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_rewrite();

CREATE TRIGGER ledger_operations_append_only
    BEFORE UPDATE OR DELETE ON ledger_operations
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_rewrite();

CREATE TRIGGER ledger_operations_no_truncate
    BEFORE TRUNCATE ON ledger_operations
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_rewrite();

-- A hold moves once, from pending to posted or voided, and its amount never changes.
CREATE FUNCTION ledger_holds_resolve_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger holds are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state <> 'pending' OR NEW.credits <> OLD.credits OR NEW.firm_id <> OLD.firm_id
        OR NEW.customer_id <> OLD.customer_id OR NEW.attempt <> OLD.attempt
        OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'a ledger hold resolves once' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_holds_resolve_once
    BEFORE UPDATE OR DELETE ON ledger_holds
    FOR EACH ROW EXECUTE FUNCTION ledger_holds_resolve_once();
