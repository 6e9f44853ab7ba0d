CREATE TABLE jobs (
    id             TEXT PRIMARY KEY NOT NULL,
    owner          TEXT NOT NULL,
    request        TEXT NOT NULL,          -- JSON JobRequest
    status         INTEGER NOT NULL,       -- Brizo status code (Phase)
    outcome        TEXT,
    error          TEXT,
    exit_code      INTEGER,
    image_digest   TEXT,
    timeout_secs   INTEGER NOT NULL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    removed        INTEGER NOT NULL DEFAULT 0,
    date_created   REAL NOT NULL,
    date_started   REAL,
    date_finished  REAL,
    outputs        TEXT NOT NULL DEFAULT '[]',  -- JSON [OutputFile]
    timings        TEXT NOT NULL DEFAULT '{}'   -- JSON PhaseTimings
);
CREATE INDEX jobs_unfinished ON jobs (status) WHERE status NOT IN (31, 32, 70);
CREATE INDEX jobs_owner ON jobs (owner, date_created);
