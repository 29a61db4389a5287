-- Dataset exports (a job each, resumable) and sources imported from the authors' MMTT release.

CREATE TABLE exports (
    id          uuid PRIMARY KEY,
    format      text NOT NULL CHECK (format IN ('hf', 'coco', 'webdataset', 'mmtt')),
    out_dir     text NOT NULL,
    options     jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    total       integer NOT NULL DEFAULT 0,
    done        integer NOT NULL DEFAULT 0,
    error       text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

ALTER TABLE sources DROP CONSTRAINT sources_dataset_check;
ALTER TABLE sources ADD CONSTRAINT sources_dataset_check CHECK (dataset IN ('celebamask-hq', 'ffhq', 'photos', 'synthetic', 'mmtt-release'));

-- The 120-word limit is the annotators' rule, enforced by the server; captions imported from the
-- authors' release keep their length (up to 123 words there).
ALTER TABLE annotations DROP CONSTRAINT annotations_word_count_check;
ALTER TABLE annotations ADD CONSTRAINT annotations_word_count_check CHECK (word_count >= 1);
