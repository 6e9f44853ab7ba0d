-- The reconcile loop asks on every pass which jobs it must still drive: the unfinished ones,
-- and the finished ones not settled yet (agreement, receipt, derived asset, clearing). Both
-- were answered by reading every job ever run: the first through the date index, the second
-- by a scan. These indexes hold only the jobs in question, so a pass costs what is in flight,
-- not the whole history. (The second's condition is the query's, word for word: SQLite uses a
-- partial index only for a query whose WHERE implies the index's.)
CREATE INDEX IF NOT EXISTS jobs_to_drive ON jobs (date_created, id, status)
    WHERE status NOT IN (31, 32, 70);
CREATE INDEX IF NOT EXISTS jobs_unsettled ON jobs (id, status)
    WHERE status IN (31, 32, 70) AND (
        (agreement IS NOT NULL AND settlement IS NULL)
        OR (removed = 0 AND (receipt IS NULL
            OR (status = 70 AND outcome = 'succeeded' AND results_did IS NULL
                AND json_extract(agreement, '$.output.publishOutput') IN (1, '1', 'true'))))
        OR (removed = 1 AND cleared = 0));
