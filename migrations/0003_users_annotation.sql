-- Accounts, sessions, login throttling, annotation tasks, annotations and their revisions.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    role          text NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE login_failures (
    id   bigserial PRIMARY KEY,
    name text NOT NULL,
    ip   text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_name ON login_failures (name, at);
CREATE INDEX login_failures_ip ON login_failures (ip, at);

-- One annotation task per forgery, created with it.
CREATE TABLE annotation_tasks (
    forgery_id     uuid PRIMARY KEY REFERENCES forgeries (id) ON DELETE CASCADE,
    status         text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'claimed', 'submitted', 'skipped', 'accepted', 'returned')),
    annotator_id   uuid REFERENCES users (id),
    lease_until    timestamptz,
    claimed_at     timestamptz,
    active_seconds double precision NOT NULL DEFAULT 0,
    last_heartbeat timestamptz,
    draft          text,
    skip_reason    text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX annotation_tasks_open ON annotation_tasks (status, forgery_id) WHERE status IN ('open', 'claimed');

INSERT INTO annotation_tasks (forgery_id) SELECT id FROM forgeries ON CONFLICT DO NOTHING;

CREATE FUNCTION mmtt_forgery_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO annotation_tasks (forgery_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER forgeries_task AFTER INSERT ON forgeries FOR EACH ROW EXECUTE FUNCTION mmtt_forgery_task();

CREATE TABLE annotations (
    id              uuid PRIMARY KEY,
    forgery_id      uuid NOT NULL UNIQUE REFERENCES forgeries (id),
    annotator_id    uuid NOT NULL REFERENCES users (id),
    text            text NOT NULL,
    regions         text[] NOT NULL,
    word_count      integer NOT NULL CHECK (word_count BETWEEN 1 AND 120),
    active_seconds  double precision NOT NULL,
    elapsed_seconds double precision NOT NULL,
    status          text NOT NULL CHECK (status IN ('submitted', 'accepted', 'returned')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every version of every annotation, with who wrote it and when.
CREATE TABLE annotation_revisions (
    id            bigserial PRIMARY KEY,
    annotation_id uuid NOT NULL REFERENCES annotations (id) ON DELETE CASCADE,
    text          text NOT NULL,
    regions       text[] NOT NULL,
    author_id     uuid NOT NULL REFERENCES users (id),
    action        text NOT NULL,
    comment       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
