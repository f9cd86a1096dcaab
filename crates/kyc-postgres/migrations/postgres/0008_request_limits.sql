-- Per-API-key request windows shared by every replica (kyc_domain::ports::RequestLimits): one row
-- per key, updated in one statement per request, so two replicas count into the same windows.
CREATE TABLE api_key_request_windows (
    key_id UUID PRIMARY KEY,
    minute_started_at TIMESTAMPTZ NOT NULL,
    minute_count INTEGER NOT NULL,
    day_started_at TIMESTAMPTZ NOT NULL,
    day_count INTEGER NOT NULL,
    -- Whether the last request counted (false: a window was full and nothing was counted).
    admitted BOOLEAN NOT NULL
);
