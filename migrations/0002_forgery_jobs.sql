-- Forgery generation: jobs, their items (the queue), and the forgeries they produce.

CREATE TABLE forge_jobs (
    id          uuid PRIMARY KEY,
    requested   integer NOT NULL,
    seed        bigint  NOT NULL,
    plan_seed   bigint  NOT NULL,
    mix         text,
    methods     text[]  NOT NULL,
    device      text    NOT NULL DEFAULT 'cpu',
    params      jsonb   NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The queue: workers claim rows with FOR UPDATE SKIP LOCKED and hold them under a lease.
CREATE TABLE forge_items (
    id           uuid PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES forge_jobs (id) ON DELETE CASCADE,
    method       text NOT NULL,
    family       text NOT NULL CHECK (family IN ('swap', 'transformer', 'diffusion', 'inpaint')),
    target_id    uuid NOT NULL REFERENCES sources (id),
    donor_id     uuid REFERENCES sources (id),
    plan_id      uuid NOT NULL REFERENCES mask_plans (id),
    seed         bigint NOT NULL,
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    lease_until  timestamptz,
    worker       text,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (method, target_id, plan_id)
);
CREATE INDEX forge_items_claim ON forge_items (status, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX forge_items_job ON forge_items (job_id);

CREATE TABLE forgeries (
    id            uuid PRIMARY KEY,
    item_id       uuid NOT NULL UNIQUE REFERENCES forge_items (id),
    method        text NOT NULL,
    target_id     uuid NOT NULL REFERENCES sources (id),
    donor_id      uuid REFERENCES sources (id),
    plan_id       uuid NOT NULL REFERENCES mask_plans (id),
    split         text NOT NULL CHECK (split IN ('train', 'validation', 'test')),
    image_hash    text NOT NULL REFERENCES blobs (hash),
    mask_hash     text NOT NULL REFERENCES blobs (hash),
    original_hash text NOT NULL REFERENCES blobs (hash),
    seed          bigint NOT NULL,
    provenance    jsonb NOT NULL,
    timings       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forgeries_method ON forgeries (method);
