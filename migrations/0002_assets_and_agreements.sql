-- The embedded metadata store (Aquarius-compatible): DDOs by DID.
CREATE TABLE ddos (
    did      TEXT PRIMARY KEY NOT NULL,
    ddo      TEXT NOT NULL,
    creator  TEXT NOT NULL,
    created  REAL NOT NULL,
    updated  REAL NOT NULL
);
-- Jobs started through a Service Agreement (v1): its terms and condition ids, and how the
-- agreement was settled (transaction hashes), as JSON.
ALTER TABLE jobs ADD COLUMN agreement TEXT;
ALTER TABLE jobs ADD COLUMN settlement TEXT;
