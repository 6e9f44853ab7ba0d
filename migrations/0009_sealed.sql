-- What an encrypted job published (JSON: recipient, sealed key hash, log digests).
ALTER TABLE jobs ADD COLUMN sealed TEXT;
