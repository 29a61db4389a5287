-- One job system for every kind of long work (issue 13): `jobs` holds each job's kind, typed
-- parameters, who started it, state, progress, result and the lease of the worker running it;
-- `job_events` its bounded log; `workers` the workers that announce themselves and heartbeat.
-- The kind-specific tables stay as detail tables sharing the job's id: `forge_jobs` (+ the
-- `forge_items` queue), `import_runs` (which `sources.import_run_id` points at) and `exports`.

CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('import', 'masks', 'forge', 'export', 'eval', 'train')),
    params        jsonb NOT NULL DEFAULT '{}',
    started_by    text NOT NULL DEFAULT 'cli',
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'paused', 'cancelling', 'cancelled', 'failed', 'done')),
    -- progress (forge jobs: counted from forge_items when read)
    done          bigint NOT NULL DEFAULT 0,
    total         bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    -- items per second, smoothed over the progress reports
    rate_per_s    double precision,
    progress_at   timestamptz,
    result        jsonb,
    error         text,
    -- forge: the items are in forge_items (workers share them); until then, one worker prepares the job
    fanned_out    boolean NOT NULL DEFAULT false,
    -- the single worker holding the job (every kind but a fanned-out forge job)
    worker        text,
    lease_until   timestamptz,
    heartbeat_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_claim ON jobs (created_at) WHERE state IN ('queued', 'running', 'cancelling');
CREATE INDEX jobs_kind_created ON jobs (kind, created_at);

CREATE TABLE job_events (
    id      bigserial PRIMARY KEY,
    job_id  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT now(),
    level   text NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    worker  text,
    message text NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE workers (
    name          text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    devices       text[] NOT NULL DEFAULT '{}',
    providers     text[] NOT NULL DEFAULT '{}',
    models        text[] NOT NULL DEFAULT '{}',
    methods       text[] NOT NULL DEFAULT '{}',
    lease_seconds double precision NOT NULL DEFAULT 60,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    current_job   uuid,
    rate_per_s    double precision,
    done          bigint NOT NULL DEFAULT 0
);

-- the worker name that holds a forge item's lease is already in forge_items.worker

-- Existing forgery jobs: counts are read from their items; every one is fanned out.
INSERT INTO jobs (id, kind, params, started_by, state, fanned_out, total, created_at, started_at, finished_at, updated_at)
SELECT j.id, 'forge',
       jsonb_build_object('kind', 'forge', 'methods', to_jsonb(j.methods), 'count', j.requested, 'seed', j.seed,
                          'plan_seed', j.plan_seed, 'mix_paper', j.mix IS NOT DISTINCT FROM 'paper', 'device', j.device,
                          'max_attempts', coalesce((SELECT max(i.max_attempts) FROM forge_items i WHERE i.job_id = j.id), 3),
                          'params', j.params),
       'cli',
       CASE WHEN EXISTS (SELECT 1 FROM forge_items i WHERE i.job_id = j.id AND i.status IN ('queued', 'running')) THEN 'running'
            ELSE 'done' END,
       true,
       (SELECT count(*) FROM forge_items i WHERE i.job_id = j.id),
       j.created_at, j.created_at,
       CASE WHEN EXISTS (SELECT 1 FROM forge_items i WHERE i.job_id = j.id AND i.status IN ('queued', 'running')) THEN NULL
            ELSE coalesce((SELECT max(i.updated_at) FROM forge_items i WHERE i.job_id = j.id), j.created_at) END,
       j.created_at
FROM forge_jobs j;

-- Import runs: a run still `running` was left by a killed process (nothing could take it over).
INSERT INTO jobs (id, kind, params, state, done, total, failed, result, error, attempts, created_at, started_at, finished_at, updated_at)
SELECT r.id, 'import',
       jsonb_build_object('kind', 'import', 'dataset', r.dataset, 'root', r.root),
       CASE r.status WHEN 'finished' THEN 'done' ELSE 'failed' END,
       r.imported + r.already_present, r.imported + r.already_present + jsonb_array_length(r.skipped),
       jsonb_array_length(r.skipped),
       jsonb_build_object('imported', r.imported, 'faces', r.faces, 'already_present', r.already_present, 'skipped', r.skipped),
       CASE r.status
            WHEN 'running' THEN 'the import process stopped without finishing (found running by migration 0009, before the job system); run the same `mmtt import` again: it skips what is stored'
            WHEN 'failed' THEN 'the import failed'
       END,
       1, r.started_at, r.started_at, coalesce(r.finished_at, r.started_at), coalesce(r.finished_at, r.started_at)
FROM import_runs r;
UPDATE import_runs SET status = 'failed', finished_at = coalesce(finished_at, now()) WHERE status = 'running';

-- Exports: a `running` one was left by a killed process too; re-running resumes it.
INSERT INTO jobs (id, kind, params, state, done, total, error, attempts, created_at, started_at, finished_at, updated_at)
SELECT e.id, 'export',
       jsonb_build_object('kind', 'export', 'format', e.format, 'out', e.out_dir) || (e.options - 'format'),
       CASE e.status WHEN 'done' THEN 'done' ELSE 'failed' END,
       e.done, e.total,
       CASE e.status
            WHEN 'running' THEN 'the export process stopped without finishing (found running by migration 0009, before the job system); run the same `mmtt export` again: it resumes'
            ELSE e.error
       END,
       1, e.started_at, e.started_at, coalesce(e.finished_at, e.updated_at), e.updated_at
FROM exports e;
UPDATE exports SET status = 'failed', error = 'stopped without finishing (found running by migration 0009)', updated_at = now()
WHERE status = 'running';

INSERT INTO job_events (job_id, level, message, at)
SELECT id, 'info', 'migrated into the job system by migration 0009', now() FROM jobs;
