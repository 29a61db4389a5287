-- Region chips the annotator chose (NULL in a draft: follow the text's suggestions), the
-- false-positive labels of the annotator's last submission (kept when a reviewer edits the text:
-- they measure the annotator), and the dashboard's indexes.

ALTER TABLE annotation_tasks ADD COLUMN draft_regions text[];
ALTER TABLE annotations ADD COLUMN fp_labels text[] NOT NULL DEFAULT '{}';
-- Bumped on every change, so a form rendered from an older version is refused as stale.
ALTER TABLE annotations ADD COLUMN version integer NOT NULL DEFAULT 1;
CREATE INDEX annotations_status ON annotations (status, updated_at);
CREATE INDEX annotations_annotator ON annotations (annotator_id);
CREATE INDEX annotation_tasks_annotator ON annotation_tasks (annotator_id, status);
