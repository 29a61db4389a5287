-- The annotator's claim path at any scale: every query of "next task" and of the task page reads a
-- few entries of a small partial index, whatever the number of tasks, annotations and revisions.
--
-- Before: one index (status, forgery_id) over open and claimed tasks served the queue, the
-- annotator's own claims (filtered row by row), and the lease-expired fallback (which walked every
-- claimed task in forgery order); the reviewer's comment on a returned task was found by joining
-- annotation_revisions without an index on annotation_id (a scan of every revision).

-- open tasks, in claim order
CREATE INDEX annotation_tasks_queue ON annotation_tasks (forgery_id) WHERE status = 'open';
-- each annotator's live claims, oldest first
CREATE INDEX annotation_tasks_held ON annotation_tasks (annotator_id, claimed_at) WHERE status = 'claimed';
-- claims by expiry, for taking over expired leases
CREATE INDEX annotation_tasks_expiry ON annotation_tasks (lease_until) WHERE status = 'claimed';
-- tasks a reviewer returned, per annotator
CREATE INDEX annotation_tasks_returned ON annotation_tasks (annotator_id, updated_at) WHERE status = 'returned';
-- an annotation's revisions, newest last
CREATE INDEX annotation_revisions_annotation ON annotation_revisions (annotation_id, id);
-- replaced by the partial indexes above
DROP INDEX annotation_tasks_open;

-- Same behaviour as migrations/0005 (own live task, else returned to them, else the first open,
-- else the longest-expired lease; claimed under FOR UPDATE SKIP LOCKED), each step one partial
-- index probe; the expired fallback takes the longest-expired lease first.
--
-- A claim is committed without waiting for the WAL flush (synchronous_commit = off for the
-- claiming transaction only): a crash can lose at most the last moments of claims, which only
-- puts those tasks back in the queue (their annotators' next heartbeat says the hold is gone);
-- annotations, reviews and drafts stay durable. The flush was most of a claim's time (about
-- 3 of 3.6 ms on the development machine).
CREATE OR REPLACE FUNCTION mmtt_next_task(who uuid, lease_seconds float8) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    picked uuid;
BEGIN
    SELECT forgery_id INTO picked FROM annotation_tasks
     WHERE annotator_id = who AND status = 'claimed' AND lease_until > now() ORDER BY claimed_at LIMIT 1;
    IF picked IS NOT NULL THEN
        RETURN picked;
    END IF;
    SELECT forgery_id INTO picked FROM annotation_tasks
     WHERE annotator_id = who AND status = 'returned' ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF picked IS NULL THEN
        SELECT forgery_id INTO picked FROM annotation_tasks
         WHERE status = 'open' ORDER BY forgery_id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF picked IS NULL THEN
        SELECT forgery_id INTO picked FROM annotation_tasks
         WHERE status = 'claimed' AND lease_until < now() ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF picked IS NULL THEN
        RETURN NULL;
    END IF;
    -- transaction-local: lasts until this claim commits
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE annotation_tasks t SET status = 'claimed', lease_until = now() + make_interval(secs => lease_seconds),
           claimed_at = now(), last_heartbeat = NULL, updated_at = now(),
           active_seconds = CASE WHEN t.annotator_id = who THEN t.active_seconds ELSE 0 END,
           draft = CASE WHEN t.annotator_id = who THEN t.draft ELSE NULL END,
           draft_regions = CASE WHEN t.annotator_id = who THEN t.draft_regions ELSE NULL END,
           annotator_id = who
     WHERE t.forgery_id = picked;
    RETURN picked;
END $$;
