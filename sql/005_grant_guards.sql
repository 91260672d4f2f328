-- popgate schema, migration 5: guard rails on relay grants.
--
-- POP-before-SMTP trusts an address for a while; behind a NAT every client
-- that shares the address shares the grant. This migration gives the daemon
-- what it needs to limit that trust (sql/README.md, "Guard rails"):
--
--   1. Per-grant quota counters on relay_grants: how many messages and
--      recipients were relayed on the grant in the current clock hour (UTC).
--      Every node that shares the database adds its counts here (once a
--      second, with the hit counter), so each sees the others'.
--   2. relay_grant_logins: one row per (address, user) that logged in there
--      while a grant lived, so `popgate grant list` can tell how many users
--      share an address (relay_grants keeps one row per address: the last
--      login's user).
--   3. Grants revoked when their user is deleted, disabled, renamed or gets a
--      new password or shared secret: triggers, so that an edit with the
--      sqlite3 shell counts exactly as `popgate user ...` does. A locked
--      account cannot relay for the rest of its grant's lifetime. Each revoked
--      grant leaves an audit row.
--   4. A new audit event, 'no-grant': a login that succeeded but opened no
--      relay (listener, no-grant network, no TLS, too many grants), and why.
--
-- Existing rows keep their meaning: the new columns start at zero, the new
-- table empty, and audit_log keeps every row (it is copied into a table with
-- the wider CHECK, the way SQLite's documentation changes a constraint).

-- ---------------------------------------------------------------------------
-- 1. Quota counters. quota_hour is the start of the hour (Unix seconds, a
--    multiple of 3600) the two counts are for; a count for an older hour is
--    zero. A message is counted at its first recipient relayed on the grant,
--    a recipient at each one relayed on it (popgate.toml, [relay]).
-- ---------------------------------------------------------------------------
ALTER TABLE relay_grants ADD COLUMN quota_hour INTEGER NOT NULL DEFAULT 0
    CONSTRAINT "relay_grants.quota_hour: the start of an hour (a multiple of 3600), or 0"
    CHECK (quota_hour >= 0 AND quota_hour % 3600 = 0);
ALTER TABLE relay_grants ADD COLUMN quota_messages INTEGER NOT NULL DEFAULT 0
    CONSTRAINT "relay_grants.quota_messages: not negative" CHECK (quota_messages >= 0);
ALTER TABLE relay_grants ADD COLUMN quota_recipients INTEGER NOT NULL DEFAULT 0
    CONSTRAINT "relay_grants.quota_recipients: not negative" CHECK (quota_recipients >= 0);

-- ---------------------------------------------------------------------------
-- 2. Who logged in at an address. Written by the daemon with every grant it
--    writes; a row counts while expires_at > now. Deleting a grant (revoke,
--    purge, an administrator's DELETE) forgets its logins.
-- ---------------------------------------------------------------------------
CREATE TABLE relay_grant_logins (
    address    TEXT NOT NULL,   -- relay_grants.address
    user       TEXT NOT NULL,
    last_login INTEGER NOT NULL DEFAULT (unixepoch()),
    expires_at INTEGER NOT NULL,  -- the grant this login wrote expires then
    PRIMARY KEY (address, user)
) STRICT, WITHOUT ROWID;
CREATE INDEX relay_grant_logins_user ON relay_grant_logins (user);

CREATE TRIGGER relay_grants_forget_logins AFTER DELETE ON relay_grants
BEGIN
    DELETE FROM relay_grant_logins WHERE address = OLD.address;
END;

-- ---------------------------------------------------------------------------
-- 4. (before 3: the revocation triggers below write audit rows into the new
--    table.) audit_log with the event 'no-grant'.
-- ---------------------------------------------------------------------------
CREATE TABLE audit_log_new (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL DEFAULT (unixepoch()),
    event   TEXT NOT NULL,
    address TEXT,
    user    TEXT,
    detail  TEXT NOT NULL DEFAULT '',
    CONSTRAINT "audit_log.event: one of grant, no-grant, revoke, deny, auth-fail, admin"
        CHECK (event IN ('grant', 'no-grant', 'revoke', 'deny', 'auth-fail', 'admin'))
) STRICT;
INSERT INTO audit_log_new (id, at, event, address, user, detail)
    SELECT id, at, event, address, user, detail FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_new RENAME TO audit_log;
CREATE INDEX audit_log_at ON audit_log (at);

-- ---------------------------------------------------------------------------
-- 3. A user who can no longer log in keeps no grant. Each trigger revokes the
--    grants whose relay_grants.user is the user (an address another user
--    logged in at last is that user's grant and stays), with one audit row
--    per grant, and forgets the user's logins. The revocation is written
--    once: inserting (user, detail) into the view revoke_user_grants runs it
--    (the view itself holds no rows).
-- ---------------------------------------------------------------------------
CREATE VIEW revoke_user_grants AS SELECT '' AS user, '' AS detail WHERE 0;
CREATE TRIGGER revoke_user_grants_run INSTEAD OF INSERT ON revoke_user_grants
BEGIN
    INSERT INTO audit_log (event, address, user, detail)
        SELECT 'revoke', address, user, NEW.detail FROM relay_grants WHERE user = NEW.user;
    DELETE FROM relay_grants WHERE user = NEW.user;
    DELETE FROM relay_grant_logins WHERE user = NEW.user;
END;

CREATE TRIGGER users_delete_revokes_grants AFTER DELETE ON users
BEGIN
    INSERT INTO revoke_user_grants (user, detail) VALUES (OLD.name, 'user deleted');
END;

-- Fires whenever disabled is written as 1 (also when it already was: a grant
-- written by hand for a disabled user goes then too).
CREATE TRIGGER users_disable_revokes_grants AFTER UPDATE OF disabled ON users
    WHEN NEW.disabled = 1
BEGIN
    INSERT INTO revoke_user_grants (user, detail) VALUES (NEW.name, 'user disabled');
END;

-- A new password or shared secret: whoever knew the old one loses the relay
-- it opened. Writing the same value again (popgate user set rewrites the
-- whole row) changes nothing.
CREATE TRIGGER users_password_revokes_grants AFTER UPDATE OF password_hash, shared_secret ON users
    WHEN NEW.password_hash IS NOT OLD.password_hash OR NEW.shared_secret IS NOT OLD.shared_secret
BEGIN
    INSERT INTO revoke_user_grants (user, detail) VALUES (NEW.name, 'password changed');
END;

-- A renamed user: the grants name a user that no longer exists.
CREATE TRIGGER users_rename_revokes_grants AFTER UPDATE OF name ON users
    WHEN NEW.name IS NOT OLD.name
BEGIN
    INSERT INTO revoke_user_grants (user, detail) VALUES (OLD.name, 'user renamed');
END;
