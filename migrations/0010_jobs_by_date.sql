-- The dashboard pages through every job newest first (keyset on date_created).
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (date_created);
