-- A timelapse of a print: its video (or zip of frames) under <data dir>/timelapse/, one per job.
-- The job's row may go; the timelapse stays until the quota or an admin removes it.

CREATE TABLE timelapses (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    file_name TEXT NOT NULL,
    format TEXT NOT NULL CHECK (format IN ('mp4', 'zip')),
    frame_count INTEGER NOT NULL,
    duration REAL NOT NULL,
    file_size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX timelapses_created ON timelapses (created_at);
