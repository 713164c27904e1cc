-- Accounts: sign-in data on users, refresh-token sessions, API keys and the audit log.
-- Secrets are never stored: passwords as bcrypt hashes, refresh tokens and API keys as SHA-256
-- hashes. Ids a user can name are UUID strings; timestamps are unix seconds in *_at columns.

ALTER TABLE users ADD COLUMN email TEXT CHECK (email IS NULL OR length(email) <= 255);
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN preferences TEXT NOT NULL DEFAULT '{}'
    CHECK (json_valid(preferences));
ALTER TABLE users ADD COLUMN last_login_at REAL;
ALTER TABLE users ADD COLUMN password_changed_at REAL;
-- NULLs never collide in a unique index, so an account may have no email.
CREATE UNIQUE INDEX users_email ON users (email COLLATE NOCASE);
CREATE INDEX users_role ON users (role, is_active);

-- One row per refresh token. A sign-in starts a family (its first row's id is the family id,
-- and the session id in access tokens); every refresh adds a row to the family and points the
-- old one at it with replaced_by. Presenting a replaced token means it was stolen.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    family_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    -- not a foreign key: pruning an expired row must never turn its predecessor live again
    replaced_by TEXT,
    address TEXT,
    user_agent TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_family ON sessions (family_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- the key's first characters, to tell keys apart in a list
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- The audit log (the seed's SystemEvent): who did what, from where.
CREATE TABLE system_events (
    id INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    ip_address TEXT,
    user_agent TEXT,
    metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    severity TEXT NOT NULL DEFAULT 'INFO'
        CHECK (severity IN ('INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    created_at REAL NOT NULL
);
CREATE INDEX system_events_created ON system_events (created_at);
CREATE INDEX system_events_type ON system_events (event_type, created_at);
