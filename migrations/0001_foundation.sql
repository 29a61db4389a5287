-- Foundation schema: project settings, content-addressed blobs, source faces with their part
-- masks, planned masks, and import runs. Later issues add forgeries, annotations, revisions,
-- reviews, users, sessions and jobs as new tables that reference these by uuid.

CREATE TABLE project_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    split_seed   bigint    NOT NULL,
    split_ratios integer[] NOT NULL CHECK (cardinality(split_ratios) = 3),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Every stored file. The file lives in the blob store under its SHA-256; a row exists only after
-- its file was written in full.
CREATE TABLE blobs (
    hash       text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    media_type text   NOT NULL,
    byte_size  bigint NOT NULL CHECK (byte_size > 0),
    width      integer,
    height     integer,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_runs (
    id              uuid PRIMARY KEY,
    dataset         text NOT NULL,
    root            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    imported        integer NOT NULL DEFAULT 0,
    faces           integer NOT NULL DEFAULT 0,
    already_present integer NOT NULL DEFAULT 0,
    skipped         jsonb   NOT NULL DEFAULT '[]',
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE TABLE sources (
    id              uuid PRIMARY KEY,
    dataset         text NOT NULL CHECK (dataset IN ('celebamask-hq', 'ffhq', 'photos')),
    original_id     text NOT NULL,
    face_index      integer NOT NULL DEFAULT 0 CHECK (face_index >= 0),
    original_path   text NOT NULL,
    original_width  integer NOT NULL,
    original_height integer NOT NULL,
    image_hash      text NOT NULL REFERENCES blobs (hash),
    width           integer NOT NULL,
    height          integer NOT NULL,
    -- 68 [x, y] points in the stored image's coordinates (NULL where none were computed)
    landmarks       jsonb,
    -- the face box in the original image, for photos
    face_box        jsonb,
    detector        text,
    part_source     text NOT NULL CHECK (part_source IN ('annotated', 'landmarks')),
    parts           text[] NOT NULL,
    split           text NOT NULL CHECK (split IN ('train', 'validation', 'test')),
    split_key       text NOT NULL,
    import_run_id   uuid REFERENCES import_runs (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset, original_id, face_index)
);
CREATE INDEX sources_split ON sources (split);
CREATE INDEX sources_image_hash ON sources (image_hash);

CREATE TABLE source_parts (
    source_id uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    part      text NOT NULL,
    mask_hash text NOT NULL REFERENCES blobs (hash),
    pixels    integer NOT NULL CHECK (pixels > 0),
    origin    text NOT NULL,
    PRIMARY KEY (source_id, part)
);

CREATE TABLE mask_plans (
    id           uuid PRIMARY KEY,
    source_id    uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    purpose      text NOT NULL CHECK (purpose IN ('inpaint', 'swap')),
    kind         text NOT NULL CHECK (kind IN ('parts', 'full_face', 'swap')),
    parts        text[] NOT NULL CHECK (cardinality(parts) > 0),
    k_drawn      smallint NOT NULL,
    seed         bigint NOT NULL,
    item_seed    bigint NOT NULL,
    rule_version integer NOT NULL,
    mask_hash    text NOT NULL REFERENCES blobs (hash),
    pixels       integer NOT NULL CHECK (pixels > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, purpose, seed, rule_version)
);
CREATE INDEX mask_plans_seed ON mask_plans (seed, rule_version);
