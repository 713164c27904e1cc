-- The picture embedded in a G-code file, kept under <data dir>/thumbnails/ by this name.

ALTER TABLE files ADD COLUMN thumbnail TEXT;
