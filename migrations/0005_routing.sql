-- Which backend runs the job, and why (data locality).
ALTER TABLE jobs ADD COLUMN backend TEXT NOT NULL DEFAULT 'local';
ALTER TABLE jobs ADD COLUMN backend_reason TEXT NOT NULL DEFAULT '';
