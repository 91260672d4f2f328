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
-- Before a row goes into users, the row it may replace is remembered in
-- users_replaced (internal: it holds a row only between the two triggers, or
-- one left by a statement that inserted nothing, which the next insert of
-- that name overwrites). After a row went in, and only then: if it replaced
-- one and is disabled or has another password or shared secret, the grants
-- go, as the UPDATE triggers do it (detail 'user replaced'). So INSERT OR
-- IGNORE, ON CONFLICT DO NOTHING, INSERT OR FAIL and an upsert's DO UPDATE
-- (whose UPDATE triggers judge it) revoke nothing here, an unchanged row
-- revokes nothing, and a name inserted for the first time revokes nothing:
-- grants a Dovecot login wrote for a name popgate did not know stay.

CREATE TABLE users_replaced (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    shared_secret TEXT,
    disabled      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TRIGGER users_replace_remember BEFORE INSERT ON users
BEGIN
    DELETE FROM users_replaced WHERE name = NEW.name;
    INSERT INTO users_replaced (name, password_hash, shared_secret, disabled)
        SELECT name, password_hash, shared_secret, disabled FROM users WHERE name = NEW.name;
END;

CREATE TRIGGER users_replace_revokes_grants AFTER INSERT ON users
BEGIN
    INSERT INTO revoke_user_grants (user, detail)
        SELECT NEW.name, 'user replaced' FROM users_replaced
         WHERE name = NEW.name
           AND (NEW.disabled = 1 OR password_hash IS NOT NEW.password_hash
                OR shared_secret IS NOT NEW.shared_secret);
    DELETE FROM users_replaced WHERE name = NEW.name;
END;
