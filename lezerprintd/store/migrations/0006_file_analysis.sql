-- The analysis of a model file: PENDING until its worker has finished, then DONE or FAILED
-- (with the reason). NULL where there is nothing to analyse (G-code: its slicer's figures are
-- read at upload).

ALTER TABLE files ADD COLUMN analysis_status TEXT
    CHECK (analysis_status IN ('PENDING', 'DONE', 'FAILED'));
ALTER TABLE files ADD COLUMN analysis_error TEXT;
