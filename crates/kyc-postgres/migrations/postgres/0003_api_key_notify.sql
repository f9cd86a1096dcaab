-- Announces every change to an API key on the channel `kyc_api_keys`, so that server processes
-- keeping keys in memory drop a key as soon as it is revoked, changed or deleted, whoever changed
-- it (the server, the CLI, another replica, raw SQL). The payload is the key's hash before the
-- change; PostgreSQL delivers it when the transaction commits, and never for one rolled back.
-- A TRUNCATE has no rows, so it sends an empty payload: forget every key.

CREATE FUNCTION kyc_api_keys_notify_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kyc_api_keys', OLD.sha256);
    RETURN NULL;
END;
$$;

CREATE FUNCTION kyc_api_keys_notify_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kyc_api_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_row
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION kyc_api_keys_notify_row();

CREATE TRIGGER api_keys_notify_truncate
    AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION kyc_api_keys_notify_all();

-- Fire also in sessions with `session_replication_role = replica` (logical replication appliers,
-- some restore tools): a change nobody announces would leave a revoked key usable.
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_notify_row;
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_notify_truncate;
