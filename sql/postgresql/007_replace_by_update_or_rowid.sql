-- popgate schema (PostgreSQL), version 7: nothing to change.
--
-- SQLite's migration 7 revokes the grants of a user that UPDATE OR REPLACE
-- or a REPLACE by rowid deletes without firing DELETE triggers. PostgreSQL
-- has neither: renaming a user onto another's name fails on the primary
-- key, and INSERT ... ON CONFLICT DO UPDATE and MERGE fire the row triggers
-- of version 5. This file keeps the two engines' versions one sequence, so
-- that `popgate db version` means the same on both.
SELECT 1;
