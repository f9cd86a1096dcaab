-- An admin disables a back-office user instead of deleting them: a disabled user cannot log in
-- and their sessions are refused, while the audit trail keeps naming them. NULL: active.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;
