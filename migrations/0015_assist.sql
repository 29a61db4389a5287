-- Model-assisted annotation (issue 17): the trained models the project may assist with, their
-- suggestions (computed ahead by `assist` jobs, never on the request path), the project's mode,
-- what each task showed and what each annotation was shown.
--
-- With assistance off nothing here is read or written on the annotation path: every new column
-- has a default that says "off / not shown", so existing rows and the old flow are unchanged.

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('import', 'masks', 'forge', 'export', 'eval', 'train', 'table3', 'assist'));

-- A trained model (stage 1 + stage 2) an admin registered for assistance.
CREATE TABLE assist_models (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- the stage-2 checkpoint folder (a training run's best/)
    checkpoint text NOT NULL,
    -- the FPN checkpoint folder choosing the regions; NULL: the checkpoint's own
    fpn        text,
    -- the training jobs they came from, when registered from the console
    talker_job uuid REFERENCES jobs (id) ON DELETE SET NULL,
    fpn_job    uuid REFERENCES jobs (id) ON DELETE SET NULL,
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The project's assistance: mode, model, and the held-out control arm. A forgery is in the
-- held-out arm when mmtt's `dataset::assist::in_holdout(forgery, seed, fraction)` says so: its
-- task is served unassisted whatever the mode, so assisted and unassisted annotations of
-- comparable forgeries can be compared (a randomised split; one annotation per forgery).
ALTER TABLE project_settings
    ADD COLUMN assist_mode text NOT NULL DEFAULT 'off' CHECK (assist_mode IN ('off', 'hint', 'prefill')),
    ADD COLUMN assist_model uuid REFERENCES assist_models (id) ON DELETE SET NULL,
    ADD COLUMN assist_holdout double precision NOT NULL DEFAULT 0.2 CHECK (assist_holdout >= 0 AND assist_holdout <= 1),
    ADD COLUMN assist_seed bigint NOT NULL DEFAULT 17;

-- One prediction per forgery and model: the caption, the FPN's confident regions (p > 0.5, in
-- label order) and the predicted binary mask (a PNG in the blob store, at the forgery's size).
CREATE TABLE suggestions (
    forgery_id uuid NOT NULL REFERENCES forgeries (id) ON DELETE CASCADE,
    model_id   uuid NOT NULL REFERENCES assist_models (id) ON DELETE CASCADE,
    text       text NOT NULL,
    regions    text[] NOT NULL,
    mask_hash  text REFERENCES blobs (hash),
    job_id     uuid REFERENCES jobs (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (forgery_id, model_id)
);
CREATE INDEX suggestions_model ON suggestions (model_id);

-- What the task showed its current annotator: the mode in effect, the model, and when the
-- suggestion was first shown (prefill: when the page opened with it; hint: when the annotator
-- asked for it after a first draft). NULL: nothing shown. Cleared with the draft when the task
-- passes to someone else.
ALTER TABLE annotation_tasks
    ADD COLUMN assist_mode text CHECK (assist_mode IN ('off', 'hint', 'prefill')),
    ADD COLUMN assist_model uuid REFERENCES assist_models (id) ON DELETE SET NULL,
    ADD COLUMN assist_shown_at timestamptz;

-- What each annotation was written with. `assist_mode` 'off' and NULL suggestion: unassisted
-- (assistance off, the held-out arm, or no prediction for the forgery). `assist_holdout`: the
-- forgery was in the held-out arm while assistance was on. The edit distance is token-level
-- (`dataset::assist::token_edit_distance`) between the suggestion's text and the submitted text.
ALTER TABLE annotations
    ADD COLUMN assist_mode text NOT NULL DEFAULT 'off' CHECK (assist_mode IN ('off', 'hint', 'prefill')),
    ADD COLUMN assist_holdout boolean NOT NULL DEFAULT false,
    ADD COLUMN suggestion_model uuid REFERENCES assist_models (id) ON DELETE SET NULL,
    ADD COLUMN suggestion_text text,
    ADD COLUMN suggestion_regions text[],
    ADD COLUMN suggestion_tokens integer,
    ADD COLUMN text_tokens integer,
    ADD COLUMN suggestion_edit_distance integer;
CREATE INDEX annotations_assist ON annotations (assist_mode, created_at);

-- A task that passes to another annotator forgets what it showed the previous one (both claim
-- paths: `mmtt_next_task` and the page's own claim).
CREATE FUNCTION mmtt_task_assist_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.assist_mode := NULL;
    NEW.assist_model := NULL;
    NEW.assist_shown_at := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER annotation_tasks_assist_reset BEFORE UPDATE OF annotator_id ON annotation_tasks
    FOR EACH ROW WHEN (OLD.annotator_id IS DISTINCT FROM NEW.annotator_id AND OLD.assist_shown_at IS NOT NULL)
    EXECUTE FUNCTION mmtt_task_assist_reset();
