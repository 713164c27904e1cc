-- The file library: virtual folders, and the content hash that recognises a second upload of
-- the same file.

ALTER TABLE files ADD COLUMN folder TEXT NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN sha256 TEXT;
CREATE INDEX files_owner ON files (user_id);
CREATE INDEX files_sha256 ON files (sha256);
