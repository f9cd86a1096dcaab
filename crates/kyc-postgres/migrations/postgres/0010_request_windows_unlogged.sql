-- The request windows are counters, not records: losing them costs a key at most a fresh window.
-- Unlogged, a request's window write skips the write-ahead log, and its commit no longer waits
-- for a flush to disk. After a crash PostgreSQL empties the table (every window starts afresh),
-- and a standby does not have it (after a failover, likewise).
ALTER TABLE api_key_request_windows SET UNLOGGED;
