-- Chunks of transfers recorded from now on are stored in the file backend under an id
-- derived from the transfer and the chunk's name, so one transfer's chunks are never
-- another's (a sender cancelling a new transfer cannot delete a file it delivered before).
-- Rows from before keep their chunks under the chunk's name.
ALTER TABLE transfers ADD COLUMN chunk_ids_per_transfer INTEGER NOT NULL DEFAULT 0;
