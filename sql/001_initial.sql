-- popgate schema, migration 1: users, relay grants, allowed networks, audit.
-- This schema is a public interface (see sql/README.md). Administrators may
-- change rows with the sqlite3 shell while the daemon runs; the constraints and
-- triggers below refuse malformed rows with a message that says why.
-- Times are Unix seconds (UTC); write them with unixepoch('now', '+30 minutes').

CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,              -- crypt(3) hash ($y$, $6$, $2b$ ...); NULL: no password login
    shared_secret TEXT,              -- APOP / CRAM-MD5 secret (plaintext-equivalent); NULL: those mechanisms off
    disabled      INTEGER NOT NULL DEFAULT 0,
    apop_only     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL DEFAULT (unixepoch()),
    updated_at    INTEGER NOT NULL DEFAULT (unixepoch()),
    CONSTRAINT "users.name: 1-255 printable ASCII characters, no '/', not starting with '.'"
        CHECK (length(name) BETWEEN 1 AND 255 AND name NOT GLOB '*[^!-~]*'
               AND name NOT GLOB '*/*' AND name NOT GLOB '.*'),
    CONSTRAINT "users.password_hash: must be a crypt(3) hash starting with '$' (never a plaintext password)"
        CHECK (password_hash IS NULL OR (password_hash GLOB '$*' AND length(password_hash) >= 13)),
    CONSTRAINT "users.disabled: 0 or 1" CHECK (disabled IN (0, 1)),
    CONSTRAINT "users.apop_only: 0 or 1" CHECK (apop_only IN (0, 1)),
    CONSTRAINT "users.apop_only: an apop-only user needs a shared_secret"
        CHECK (apop_only = 0 OR shared_secret IS NOT NULL)
) STRICT;

CREATE TRIGGER users_touch AFTER UPDATE ON users
    WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE users SET updated_at = unixepoch() WHERE name = NEW.name;
END;

-- One row per client address. `address` is normalised: IPv4 dotted quad
-- without leading zeros; IPv6 lowercase RFC 5952 text, truncated to
-- relay.ipv6_prefix bits by the daemon (a full IPv6 address also matches).
CREATE TABLE relay_grants (
    address    TEXT PRIMARY KEY NOT NULL,
    user       TEXT NOT NULL DEFAULT '',
    method     TEXT NOT NULL DEFAULT 'sql',   -- pass | apop | sasl-<mechanism> | cli | sql
    tls        INTEGER NOT NULL DEFAULT 0,    -- the login ran over TLS
    listener   TEXT NOT NULL DEFAULT '',
    granted_at INTEGER NOT NULL DEFAULT (unixepoch()),
    expires_at INTEGER NOT NULL,
    hits       INTEGER NOT NULL DEFAULT 0,    -- relay decisions that used this grant
    last_used  INTEGER,
    CONSTRAINT "relay_grants.method: one of pass, apop, sasl-<mechanism>, cli, sql"
        CHECK (method IN ('pass', 'apop', 'cli', 'sql') OR method GLOB 'sasl-[a-z0-9]*'),
    CONSTRAINT "relay_grants.tls: 0 or 1" CHECK (tls IN (0, 1)),
    CONSTRAINT "relay_grants.expires_at: must be later than granted_at"
        CHECK (expires_at > granted_at),
    CONSTRAINT "relay_grants.hits: not negative" CHECK (hits >= 0)
) STRICT, WITHOUT ROWID;

CREATE INDEX relay_grants_expires ON relay_grants (expires_at);
CREATE INDEX relay_grants_user ON relay_grants (user);

CREATE TABLE allowed_networks (
    id         INTEGER PRIMARY KEY,
    cidr       TEXT NOT NULL UNIQUE,          -- 192.0.2.0/24, 2001:db8::/32, or one address
    note       TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    expires_at INTEGER,                       -- NULL: never
    CONSTRAINT "allowed_networks.expires_at: must be later than created_at"
        CHECK (expires_at IS NULL OR expires_at > created_at)
) STRICT;

-- Bumped by triggers on every change to allowed_networks, including changes
-- made with the sqlite3 shell, so the daemon reloads its in-memory network list
-- at the next decision and at no other time.
CREATE TABLE network_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO network_generation (id, generation) VALUES (1, 0);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL DEFAULT (unixepoch()),
    event   TEXT NOT NULL,
    address TEXT,
    user    TEXT,
    detail  TEXT NOT NULL DEFAULT '',
    CONSTRAINT "audit_log.event: one of grant, revoke, deny, auth-fail, admin"
        CHECK (event IN ('grant', 'revoke', 'deny', 'auth-fail', 'admin'))
) STRICT;
CREATE INDEX audit_log_at ON audit_log (at);

-- Address checks (generated once from a small script; kept as plain SQL so
-- the sqlite3 shell enforces them too). The daemon parses every row again and
-- ignores, with a warning, any row it cannot read: never an open relay.
CREATE TRIGGER relay_grants_address_insert BEFORE INSERT ON relay_grants
    WHEN NOT ((NEW.address NOT GLOB '*[^0-9.]*' AND length(NEW.address) - length(replace(NEW.address, '.', '')) = 3 AND ('.' || NEW.address || '.') NOT GLOB '*..*' AND ('.' || NEW.address || '.') NOT GLOB '*.0[0-9]*' AND ('.' || NEW.address || '.') NOT GLOB '*[0-9][0-9][0-9][0-9]*' AND ('.' || NEW.address || '.') NOT GLOB '*.[3-9][0-9][0-9].*' AND ('.' || NEW.address || '.') NOT GLOB '*.2[6-9][0-9].*' AND ('.' || NEW.address || '.') NOT GLOB '*.25[6-9].*') OR (NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*' AND length(NEW.address) BETWEEN 2 AND 39 AND NEW.address NOT GLOB '*:::*' AND NEW.address NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*' AND length(NEW.address) - length(replace(NEW.address, '::', '')) <= 2 AND length(NEW.address) - length(replace(NEW.address, ':', '')) BETWEEN 2 AND 7))
BEGIN
    SELECT RAISE(ABORT, 'relay_grants.address: not a normalised IPv4 or lowercase IPv6 address (write 192.0.2.7 or 2001:db8::1)');
END;
CREATE TRIGGER relay_grants_address_update BEFORE UPDATE OF address ON relay_grants
    WHEN NOT ((NEW.address NOT GLOB '*[^0-9.]*' AND length(NEW.address) - length(replace(NEW.address, '.', '')) = 3 AND ('.' || NEW.address || '.') NOT GLOB '*..*' AND ('.' || NEW.address || '.') NOT GLOB '*.0[0-9]*' AND ('.' || NEW.address || '.') NOT GLOB '*[0-9][0-9][0-9][0-9]*' AND ('.' || NEW.address || '.') NOT GLOB '*.[3-9][0-9][0-9].*' AND ('.' || NEW.address || '.') NOT GLOB '*.2[6-9][0-9].*' AND ('.' || NEW.address || '.') NOT GLOB '*.25[6-9].*') OR (NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*' AND length(NEW.address) BETWEEN 2 AND 39 AND NEW.address NOT GLOB '*:::*' AND NEW.address NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*' AND length(NEW.address) - length(replace(NEW.address, '::', '')) <= 2 AND length(NEW.address) - length(replace(NEW.address, ':', '')) BETWEEN 2 AND 7))
BEGIN
    SELECT RAISE(ABORT, 'relay_grants.address: not a normalised IPv4 or lowercase IPv6 address (write 192.0.2.7 or 2001:db8::1)');
END;
CREATE TRIGGER allowed_networks_cidr_insert BEFORE INSERT ON allowed_networks
    WHEN NOT ((((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[^0-9.]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), '.', '')) = 3 AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*..*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.0[0-9]*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*[0-9][0-9][0-9][0-9]*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.[3-9][0-9][0-9].*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.2[6-9][0-9].*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.25[6-9].*') OR ((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) GLOB '*:*' AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[^0-9a-f:]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) BETWEEN 2 AND 39 AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*:::*' AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), '::', '')) <= 2 AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), ':', '')) BETWEEN 2 AND 7)) AND (instr(NEW.cidr, '/') = 0 OR (substr(NEW.cidr, instr(NEW.cidr, '/') + 1) GLOB '[0-9]*' AND substr(NEW.cidr, instr(NEW.cidr, '/') + 1) NOT GLOB '*[^0-9]*' AND length(substr(NEW.cidr, instr(NEW.cidr, '/') + 1)) <= 3 AND (substr(NEW.cidr, instr(NEW.cidr, '/') + 1) = '0' OR substr(NEW.cidr, instr(NEW.cidr, '/') + 1) NOT GLOB '0*') AND CAST(substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS INTEGER) <= (CASE WHEN (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) GLOB '*:*' THEN 128 ELSE 32 END))))
BEGIN
    SELECT RAISE(ABORT, 'allowed_networks.cidr: not a network (write 192.0.2.0/24, 2001:db8::/32 or one address; IPv6 in lowercase)');
END;
CREATE TRIGGER allowed_networks_cidr_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN NOT ((((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[^0-9.]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), '.', '')) = 3 AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*..*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.0[0-9]*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*[0-9][0-9][0-9][0-9]*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.[3-9][0-9][0-9].*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.2[6-9][0-9].*' AND ('.' || (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) || '.') NOT GLOB '*.25[6-9].*') OR ((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) GLOB '*:*' AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[^0-9a-f:]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) BETWEEN 2 AND 39 AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*:::*' AND (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*' AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), '::', '')) <= 2 AND length((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END)) - length(replace((CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END), ':', '')) BETWEEN 2 AND 7)) AND (instr(NEW.cidr, '/') = 0 OR (substr(NEW.cidr, instr(NEW.cidr, '/') + 1) GLOB '[0-9]*' AND substr(NEW.cidr, instr(NEW.cidr, '/') + 1) NOT GLOB '*[^0-9]*' AND length(substr(NEW.cidr, instr(NEW.cidr, '/') + 1)) <= 3 AND (substr(NEW.cidr, instr(NEW.cidr, '/') + 1) = '0' OR substr(NEW.cidr, instr(NEW.cidr, '/') + 1) NOT GLOB '0*') AND CAST(substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS INTEGER) <= (CASE WHEN (CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, 1, instr(NEW.cidr, '/') - 1) ELSE NEW.cidr END) GLOB '*:*' THEN 128 ELSE 32 END))))
BEGIN
    SELECT RAISE(ABORT, 'allowed_networks.cidr: not a network (write 192.0.2.0/24, 2001:db8::/32 or one address; IPv6 in lowercase)');
END;
CREATE TRIGGER allowed_networks_bump_insert AFTER INSERT ON allowed_networks
BEGIN
    UPDATE network_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER allowed_networks_bump_update AFTER UPDATE ON allowed_networks
BEGIN
    UPDATE network_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER allowed_networks_bump_delete AFTER DELETE ON allowed_networks
BEGIN
    UPDATE network_generation SET generation = generation + 1 WHERE id = 1;
END;

-- What an MTA may read directly (Postfix: deploy/postfix/relay_clients.cf).
-- Grants appear as their address; a network appears as its CIDR, except that a
-- single-host network appears as the bare address so exact-match lookups find it.
CREATE VIEW relay_clients AS
    SELECT address AS client, 'grant' AS source, user, expires_at
      FROM relay_grants WHERE expires_at > unixepoch()
    UNION ALL
    SELECT CASE WHEN (cidr GLOB '*/32' AND cidr NOT GLOB '*:*') OR cidr GLOB '*:*/128'
                THEN substr(cidr, 1, instr(cidr, '/') - 1) ELSE cidr END,
           'network', NULL, expires_at
      FROM allowed_networks WHERE expires_at IS NULL OR expires_at > unixepoch();

