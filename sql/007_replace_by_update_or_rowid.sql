-- popgate schema, migration 7: the other ways SQLite's REPLACE takes a user.
--
-- Migration 6 judged an INSERT OR REPLACE by the name it inserts. REPLACE
-- deletes whichever row stands in the way, without DELETE triggers, in two
-- more ways, and the user deleted kept relaying on its grants:
--   UPDATE OR REPLACE users SET name = 'bob' WHERE name = 'alice'
--     deletes bob's row; alice's row, with alice's password, is bob now.
--     The rename trigger revokes alice's grants, not bob's.
--   INSERT OR REPLACE INTO users (rowid, name, ...) VALUES (7, 'carol', ...)
--   UPDATE OR REPLACE users SET rowid = 7 WHERE name = 'carol'
--     delete the user whose rowid is 7, whatever its name.
--
-- Before an insert, or an update that moves a row to another name or rowid,
-- every row it may replace is remembered in users_replaced (by name or by
-- rowid; in a BEFORE INSERT trigger NEW.rowid is -1 unless the statement
-- gives one). After it, as migration 6 does for the name: a row of the same
-- name that the new one differs from (disabled, another password or shared
-- secret) loses its grants, detail 'user replaced'; and a remembered row of
-- another name that is no longer in users was deleted, so its grants go as
-- a DELETE's would (detail 'user replaced'). users_replaced is emptied
-- before each row, so nothing a statement that changed nothing left is ever
-- judged. This also replaces migration 6's two triggers with these (a
-- development database may hold an earlier text of them).
--
-- One statement can still revoke a user it leaves unchanged: a REPLACE of
-- several rows that swaps two users' rowids judges the first row before
-- the second puts the other user back (a fresh login grants again).
--
-- And users_touch (migration 1) no longer recurses for ever under PRAGMA
-- recursive_triggers = ON, which made any UPDATE of a user changed in the
-- same second fail: a row already stamped this second is left as it is.

DROP TRIGGER users_replace_remember;
DROP TRIGGER users_replace_revokes_grants;
DROP TRIGGER users_touch;

CREATE TRIGGER users_touch AFTER UPDATE ON users
    WHEN NEW.updated_at = OLD.updated_at AND OLD.updated_at IS NOT unixepoch()
BEGIN
    UPDATE users SET updated_at = unixepoch() WHERE name = NEW.name;
END;

-- The judgement after a row went in or moved, given the row as it is now
-- (internal, as revoke_user_grants: it holds no rows; an insert runs it).
CREATE VIEW users_replaced_judge (name, password_hash, shared_secret, disabled) AS
    SELECT name, password_hash, shared_secret, disabled FROM users_replaced WHERE 0;

CREATE TRIGGER users_replaced_judge_run INSTEAD OF INSERT ON users_replaced_judge
BEGIN
    INSERT INTO revoke_user_grants (user, detail)
        SELECT name, 'user replaced' FROM users_replaced
         WHERE (name = NEW.name AND (NEW.disabled = 1 OR password_hash IS NOT NEW.password_hash
                                     OR shared_secret IS NOT NEW.shared_secret))
            OR (name <> NEW.name AND name NOT IN (SELECT name FROM users));
    DELETE FROM users_replaced;
END;

CREATE TRIGGER users_replace_remember BEFORE INSERT ON users
BEGIN
    DELETE FROM users_replaced;
    INSERT INTO users_replaced (name, password_hash, shared_secret, disabled)
        SELECT name, password_hash, shared_secret, disabled FROM users
         WHERE name = NEW.name OR rowid = NEW.rowid;
END;

CREATE TRIGGER users_replace_revokes_grants AFTER INSERT ON users
BEGIN
    INSERT INTO users_replaced_judge (name, password_hash, shared_secret, disabled)
        VALUES (NEW.name, NEW.password_hash, NEW.shared_secret, NEW.disabled);
END;

CREATE TRIGGER users_move_remember BEFORE UPDATE ON users
    WHEN NEW.name IS NOT OLD.name OR NEW.rowid IS NOT OLD.rowid
BEGIN
    DELETE FROM users_replaced;
    INSERT INTO users_replaced (name, password_hash, shared_secret, disabled)
        SELECT name, password_hash, shared_secret, disabled FROM users
         WHERE (name = NEW.name OR rowid = NEW.rowid) AND rowid <> OLD.rowid;
END;

CREATE TRIGGER users_move_revokes_grants AFTER UPDATE ON users
    WHEN NEW.name IS NOT OLD.name OR NEW.rowid IS NOT OLD.rowid
BEGIN
    INSERT INTO users_replaced_judge (name, password_hash, shared_secret, disabled)
        VALUES (NEW.name, NEW.password_hash, NEW.shared_secret, NEW.disabled);
END;
