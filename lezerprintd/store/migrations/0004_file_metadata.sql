-- What the slicer wrote about a G-code file (JSON), read when the file is uploaded.

ALTER TABLE files ADD COLUMN metadata TEXT;
