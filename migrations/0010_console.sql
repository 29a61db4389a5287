-- The admin console: API tokens for scripts and the record of admin actions.

-- A script's bearer token; only its SHA-256 is stored. A token acts as its (admin) user.
CREATE TABLE api_tokens (
    token_hash   text PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label        text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked      boolean NOT NULL DEFAULT false
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Who did what, when: every accepted admin action of the console (pages and JSON alike).
CREATE TABLE admin_actions (
    id        bigserial PRIMARY KEY,
    user_name text NOT NULL,
    action    text NOT NULL CHECK (length(action) <= 100),
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
    via       text NOT NULL CHECK (via IN ('session', 'token', 'cli')),
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_actions_at ON admin_actions (at DESC);
