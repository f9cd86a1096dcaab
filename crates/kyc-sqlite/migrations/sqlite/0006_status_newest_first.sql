-- The back office lists customers newest change first, often filtered by one status: these
-- indexes deliver that order for a status filter, so the page is one index range read
-- backwards rather than every match sorted.
CREATE INDEX customers_kyc_status_updated_idx ON customers (firm_id, kyc_status, updated_at, id);
CREATE INDEX customers_aml_status_updated_idx ON customers (firm_id, aml_status, updated_at, id);
