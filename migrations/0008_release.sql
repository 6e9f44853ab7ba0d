-- The publisher's release of a job's outputs (JSON), for jobs whose dataset reviews them.
ALTER TABLE jobs ADD COLUMN release TEXT;
