-- Failed back-office logins shared by every replica (kyc_domain::ports::LoginFailures). Keys are
-- SHA-256 digests of "account:<email>" or "address:<ip>", never the email or address itself.
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_key_idx ON login_failures (key, failed_at);
