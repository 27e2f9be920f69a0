-- API keys of the gateway's callers. Only the SHA-256 of a key's secret is stored: the token is
-- shown once, at creation, and a copy of this table is of no use to whoever reads it.

CREATE TABLE api_keys (
    -- The public part of the token, rgl_<key_id>_<secret>: 16 lowercase base32 characters.
    key_id text COLLATE "C" PRIMARY KEY CHECK (key_id ~ '^[a-z2-7]{16}$'),
    tenant text COLLATE "C" NOT NULL,
    role text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    display_name text NOT NULL DEFAULT '',
    secret_sha256 text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at timestamptz
);

-- A tenant's keys are listed oldest first; the key id breaks ties so pages never skip or repeat a key.
CREATE INDEX api_keys_listing ON api_keys (tenant, created_at, key_id);
