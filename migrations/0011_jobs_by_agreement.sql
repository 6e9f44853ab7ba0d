-- v1 lists a consumer's jobs under an agreement on every status poll without a job id: an
-- index on the same expression the query uses keeps that from reading the whole table.
CREATE INDEX IF NOT EXISTS jobs_agreement ON jobs (owner, json_extract(agreement, '$.agreementId'));
