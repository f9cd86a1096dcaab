-- The credits ledger: double-entry and append-only (the same model as the Postgres schema).
--
-- `ledger_operations` is one row per operation: the statement. `ledger_entries` holds its postings
-- to the firm's accounts; every operation's entries sum to zero. Both refuse UPDATE and DELETE.
-- `ledger_firms` caches the running balances, updated in the same (IMMEDIATE, so serialised)
-- transaction as the entries they summarise. Times are UTC microseconds since the Unix epoch, so
-- day boundaries and ordering compare as integers.

CREATE TABLE ledger_firms (
    firm_id TEXT NOT NULL,
    daily_cap_credits INTEGER,
    available_credits INTEGER NOT NULL DEFAULT 0,
    held_credits INTEGER NOT NULL DEFAULT 0,
    spent_credits INTEGER NOT NULL DEFAULT 0,
    funded_credits INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT ledger_firms_pkey PRIMARY KEY (firm_id),
    CONSTRAINT ledger_firms_daily_cap_not_negative CHECK (daily_cap_credits IS NULL OR daily_cap_credits >= 0),
    CONSTRAINT ledger_firms_available_not_negative CHECK (available_credits >= 0),
    CONSTRAINT ledger_firms_held_not_negative CHECK (held_credits >= 0),
    CONSTRAINT ledger_firms_spent_not_negative CHECK (spent_credits >= 0),
    CONSTRAINT ledger_firms_funded_not_positive CHECK (funded_credits <= 0)
);

CREATE TABLE ledger_operations (
    -- An alias of the rowid: rows are never deleted, so it only grows, in commit order.
    seq INTEGER NOT NULL CONSTRAINT ledger_operations_pkey PRIMARY KEY,
    id TEXT NOT NULL,
    firm_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    credits INTEGER NOT NULL,
    available_delta INTEGER NOT NULL,
    customer_id TEXT,
    attempt INTEGER,
    reference TEXT,
    created_at INTEGER NOT NULL,
    CONSTRAINT ledger_operations_id_key UNIQUE (id),
    CONSTRAINT ledger_operations_firm_fkey FOREIGN KEY (firm_id) REFERENCES ledger_firms (firm_id),
    CONSTRAINT ledger_operations_kind_known CHECK (kind IN ('grant', 'reserve', 'post', 'void', 'refund')),
    CONSTRAINT ledger_operations_credits_positive CHECK (credits > 0),
    CONSTRAINT ledger_operations_hold_complete CHECK ((customer_id IS NULL) = (attempt IS NULL))
);

CREATE INDEX ledger_operations_firm_seq_idx ON ledger_operations (firm_id, seq DESC);
CREATE INDEX ledger_operations_hold_idx ON ledger_operations (firm_id, customer_id, attempt);

CREATE TABLE ledger_entries (
    id INTEGER NOT NULL CONSTRAINT ledger_entries_pkey PRIMARY KEY,
    operation_id TEXT NOT NULL,
    firm_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_credits INTEGER NOT NULL,
    CONSTRAINT ledger_entries_operation_fkey FOREIGN KEY (operation_id) REFERENCES ledger_operations (id),
    CONSTRAINT ledger_entries_account_known CHECK (account IN ('available', 'held', 'spent', 'funding')),
    CONSTRAINT ledger_entries_amount_not_zero CHECK (amount_credits <> 0)
);

CREATE INDEX ledger_entries_firm_account_idx ON ledger_entries (firm_id, account);
CREATE INDEX ledger_entries_operation_idx ON ledger_entries (operation_id);

CREATE TABLE ledger_holds (
    firm_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
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
    firm_id TEXT NOT NULL,
    key TEXT NOT NULL,
    operation TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT ledger_idempotency_pkey PRIMARY KEY (firm_id, key),
    CONSTRAINT ledger_idempotency_firm_fkey FOREIGN KEY (firm_id) REFERENCES ledger_firms (firm_id)
);

-- Entries and operations are history: refuse any rewrite.
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger history is append-only: UPDATE on ledger_entries refused'); END;

CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger history is append-only: DELETE on ledger_entries refused'); END;

CREATE TRIGGER ledger_operations_no_update BEFORE UPDATE ON ledger_operations
BEGIN SELECT RAISE(ABORT, 'ledger history is append-only: UPDATE on ledger_operations refused'); END;

CREATE TRIGGER ledger_operations_no_delete BEFORE DELETE ON ledger_operations
BEGIN SELECT RAISE(ABORT, 'ledger history is append-only: DELETE on ledger_operations refused'); END;

-- A hold moves once, from pending to posted or voided, and its amount never changes.
CREATE TRIGGER ledger_holds_resolve_once BEFORE UPDATE ON ledger_holds
WHEN OLD.state <> 'pending' OR NEW.credits <> OLD.credits OR NEW.firm_id <> OLD.firm_id
    OR NEW.customer_id <> OLD.customer_id OR NEW.attempt <> OLD.attempt
    OR NEW.created_at <> OLD.created_at
BEGIN SELECT RAISE(ABORT, 'a ledger hold resolves once'); END;

CREATE TRIGGER ledger_holds_no_delete BEFORE DELETE ON ledger_holds
BEGIN SELECT RAISE(ABORT, 'ledger holds are never deleted'); END;
