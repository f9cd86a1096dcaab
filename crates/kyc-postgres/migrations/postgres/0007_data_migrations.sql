-- Data moves that run in Rust after the schema migrations (kyc_store_support::times and later),
-- each recorded once it has finished so a restart does not walk the tables again.
CREATE TABLE data_migrations (
    name    text        NOT NULL CONSTRAINT data_migrations_pkey PRIMARY KEY,
    done_at timestamptz NOT NULL
);
