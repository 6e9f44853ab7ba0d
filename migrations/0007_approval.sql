-- The publisher's approval (JSON), for jobs whose dataset asks for one; NULL: none needed.
ALTER TABLE jobs ADD COLUMN approval TEXT;
