-- popgate schema, migration 6: a user replaced by plain SQL loses its grants.
--
-- Migration 5 revokes a user's grants when the row is deleted, disabled,
-- renamed or given another password or shared secret. SQLite's REPLACE
-- (INSERT OR REPLACE, the usual upsert of the sqlite3 shell) does none of
-- those: it deletes the old row without firing DELETE triggers (unless
-- recursive_triggers is on, which the sqlite3 shell's is not) and inserts
-- a new one. A user disabled or given a new password that way kept relaying
-- on the old login's grant until it expired.
--
-- Before a row is inserted under a name that already has one, and the new
-- row would disable the user or change the password or shared secret, the
-- grants go, as the UPDATE triggers do it (detail 'user replaced'). The
-- same test covers INSERT ... ON CONFLICT DO UPDATE (popgate user import
-- --replace): an unchanged row revokes nothing. A plain INSERT that fails on
-- the name undoes the revocation with the rest of the statement. A name
-- inserted for the first time revokes nothing: grants a Dovecot login wrote
-- for a name popgate did not know stay.

CREATE TRIGGER users_replace_revokes_grants BEFORE INSERT ON users
    WHEN EXISTS (SELECT 1 FROM users
                  WHERE name = NEW.name
                    AND (NEW.disabled = 1 OR password_hash IS NOT NEW.password_hash
                         OR shared_secret IS NOT NEW.shared_secret))
BEGIN
    INSERT INTO revoke_user_grants (user, detail) VALUES (NEW.name, 'user replaced');
END;
