-- What a print used, kept on its job so the history outlives the file it came from.
-- When the job is created, the slicer's figures for the whole file are copied in (material,
-- estimated_time from 0001, and the two estimated_filament_* columns); when it ends,
-- filament_length (mm) and filament_used (g, from 0001) say what was used: all of it for a
-- completed print, a share by progress for one that stopped early. NULL wherever the slicer
-- did not say: an unknown amount is never shown as 0.

ALTER TABLE print_jobs ADD COLUMN material TEXT;
ALTER TABLE print_jobs ADD COLUMN estimated_filament_length REAL;
ALTER TABLE print_jobs ADD COLUMN estimated_filament_used REAL;
ALTER TABLE print_jobs ADD COLUMN filament_length REAL;

-- The history's aggregates select finished jobs by when they ended. The dashboard's columns
-- ride along, so its two queries never leave the index (a third of its time over a year of
-- 10,000 jobs, bench/analytics.py); the index changes only when a job changes status.
CREATE INDEX print_jobs_completed
    ON print_jobs (completed_at, status, actual_time, estimated_time, filament_used);
