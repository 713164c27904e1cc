-- The appliance's first schema: print jobs with their events and temperature logs, the
-- settings table, and the users and files that jobs refer to (both grow in later migrations).
-- Ids of rows a user can name are UUID strings; timestamps are unix seconds in *_at columns.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL DEFAULT 'VIEWER' CHECK (role IN ('ADMIN', 'OPERATOR', 'VIEWER')),
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    original_name TEXT NOT NULL,
    file_name TEXT NOT NULL UNIQUE,
    file_type TEXT NOT NULL CHECK (file_type IN ('GCODE', 'STL', 'OBJ', 'THREEMF')),
    file_size INTEGER NOT NULL CHECK (file_size >= 0),
    print_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE print_jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    file_id TEXT REFERENCES files (id) ON DELETE SET NULL,
    -- what was printed, kept when the file itself is deleted
    file_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN (
        'QUEUED', 'PREPARING', 'PRINTING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELLED'
    )),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    bytes_total INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    lines_done INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    completed_at REAL,
    estimated_time INTEGER,
    actual_time INTEGER,
    filament_used REAL,
    cost TEXT,
    notes TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX print_jobs_user ON print_jobs (user_id);
CREATE INDEX print_jobs_status ON print_jobs (status);
CREATE INDEX print_jobs_started ON print_jobs (started_at);

CREATE TABLE print_events (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES print_jobs (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL CHECK (event_type IN (
        'JOB_QUEUED', 'JOB_PREPARING', 'JOB_STARTED', 'JOB_PAUSED', 'JOB_RESUMED',
        'JOB_COMPLETED', 'JOB_FAILED', 'JOB_CANCELLED', 'FILAMENT_CHANGE', 'POWER_LOSS',
        'THERMAL_RUNAWAY', 'POSITION_ERROR', 'CUSTOM'
    )),
    message TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    metadata TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX print_events_job ON print_events (job_id, created_at);

CREATE TABLE temperature_logs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES print_jobs (id) ON DELETE CASCADE,
    hotend_temp REAL,
    hotend_target REAL,
    bed_temp REAL,
    bed_target REAL,
    chamber_temp REAL,
    recorded_at REAL NOT NULL
);
CREATE INDEX temperature_logs_job ON temperature_logs (job_id, recorded_at);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT 'general',
    description TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX settings_category ON settings (category);
