-- Region chips the annotator chose (NULL in a draft: follow the text's suggestions), the
-- false-positive labels of the annotator's last submission (kept when a reviewer edits the text:
-- they measure the annotator), and the dashboard's indexes.

ALTER TABLE annotation_tasks ADD COLUMN draft_regions text[];
ALTER TABLE annotations ADD COLUMN fp_labels text[] NOT NULL DEFAULT '{}';
-- The reference extractor's labels of the current text (spec section 7), kept with every change
-- of the text so statistics and exports need not re-run it.
ALTER TABLE annotations ADD COLUMN mentions text[] NOT NULL DEFAULT '{}';
-- Bumped on every change, so a form rendered from an older version is refused as stale.
ALTER TABLE annotations ADD COLUMN version integer NOT NULL DEFAULT 1;
CREATE INDEX annotations_status ON annotations (status, updated_at);
CREATE INDEX annotations_annotator ON annotations (annotator_id);
CREATE INDEX annotation_tasks_annotator ON annotation_tasks (annotator_id, status);

-- "Next task" in one round trip: the annotator's own live task (oldest claim first), else a task
-- a reviewer returned to them, else the first open task, else one whose lease expired; the last
-- three are claimed under FOR UPDATE SKIP LOCKED, so no two annotators ever hold one task. A task
-- that comes back to its previous annotator keeps their active time and draft.
CREATE FUNCTION mmtt_next_task(who uuid, lease_seconds float8) RETURNS uuid LANGUAGE plpgsql AS $$
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
         WHERE status = 'open' ORDER BY status, forgery_id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF picked IS NULL THEN
        SELECT forgery_id INTO picked FROM annotation_tasks
         WHERE status = 'claimed' AND lease_until < now() ORDER BY status, forgery_id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF picked IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE annotation_tasks t SET status = 'claimed', lease_until = now() + make_interval(secs => lease_seconds),
           claimed_at = now(), last_heartbeat = NULL, updated_at = now(),
           active_seconds = CASE WHEN t.annotator_id = who THEN t.active_seconds ELSE 0 END,
           draft = CASE WHEN t.annotator_id = who THEN t.draft ELSE NULL END,
           draft_regions = CASE WHEN t.annotator_id = who THEN t.draft_regions ELSE NULL END,
           annotator_id = who
     WHERE t.forgery_id = picked;
    RETURN picked;
END $$;
