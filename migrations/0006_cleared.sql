-- A removed job's leftovers (container, folder, log, published results) are gone.
ALTER TABLE jobs ADD COLUMN cleared INTEGER NOT NULL DEFAULT 0;
