-- The DID of the results, when the consumer asked for them to be published as a new asset.
ALTER TABLE jobs ADD COLUMN results_did TEXT;
