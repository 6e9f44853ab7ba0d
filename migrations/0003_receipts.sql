-- Digests of what was staged (algorithm and inputs), taken at staging, and the job's signed
-- receipt, both JSON.
ALTER TABLE jobs ADD COLUMN staged TEXT;
ALTER TABLE jobs ADD COLUMN receipt TEXT;
