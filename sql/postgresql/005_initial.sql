-- popgate schema on PostgreSQL, version 5: the whole schema at once, with the
-- same tables, columns and meaning as SQLite's migrations 001..005 (sql/*.sql).
-- sql/README.md, "PostgreSQL", says where the two engines differ and why.
--
-- popgate applies this file in its own transaction, after creating
-- schema_migrations itself, and records version 5 there: so no BEGIN/COMMIT
-- and no schema_migrations here. Later PostgreSQL migrations are
-- sql/postgresql/NNN_*.sql with NNN > 005, applied on top of this one.
--
-- This schema is a public interface: administrators may change rows with
-- psql while the daemons run; the checks below refuse malformed rows with a
-- message that says what to write instead.

-- ---------------------------------------------------------------------------
-- Time. Every time column holds integer Unix seconds (UTC), as on SQLite, so
-- that `popgate db copy` is lossless, the store reads one representation and
-- an MTA query compares the same numbers. unixepoch() is SQLite's function of
-- the same name, so `WHERE expires_at > unixepoch()` reads the same on both
-- engines. floor(): SQLite truncates to the second; a plain ::bigint cast
-- would round, and a grant would end up to half a second early. now() is the
-- start of the transaction (one value for every row a transaction writes).
-- ---------------------------------------------------------------------------
CREATE FUNCTION unixepoch() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN floor(extract(epoch FROM now()))::bigint;

-- ---------------------------------------------------------------------------
-- Checks with a message an administrator understands. PostgreSQL names a
-- failed CHECK by its constraint name, but a name is at most 63 bytes and the
-- messages below are longer; so each CHECK calls popgate_check, which raises
-- the message itself as a check_violation (SQLSTATE 23514, as a failed
-- CHECK). A NULL condition passes, as in a CHECK.
-- ---------------------------------------------------------------------------
CREATE FUNCTION popgate_check(ok boolean, message text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF ok IS FALSE THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;

-- ---------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------
CREATE TABLE users (
    name          text PRIMARY KEY,
    password_hash text,               -- crypt(3) hash ($y$, $6$, $2b$ ...); NULL: no password login
    shared_secret text,               -- APOP / CRAM-MD5 secret (plaintext-equivalent); NULL: those mechanisms off
    disabled      boolean NOT NULL DEFAULT false,
    apop_only     boolean NOT NULL DEFAULT false,
    created_at    bigint NOT NULL DEFAULT unixepoch(),
    updated_at    bigint NOT NULL DEFAULT unixepoch(),
    CONSTRAINT "users.name" CHECK (popgate_check(
        length(name) BETWEEN 1 AND 255 AND name !~ '[^!-~]' AND strpos(name, '/') = 0 AND left(name, 1) <> '.',
        'users.name: 1-255 printable ASCII characters, no ''/'', not starting with ''.''')),
    CONSTRAINT "users.password_hash" CHECK (popgate_check(
        password_hash IS NULL OR (left(password_hash, 1) = '$' AND length(password_hash) >= 13),
        'users.password_hash: must be a crypt(3) hash starting with ''$'' (never a plaintext password)')),
    CONSTRAINT "users.apop_only" CHECK (popgate_check(
        NOT apop_only OR shared_secret IS NOT NULL,
        'users.apop_only: an apop-only user needs a shared_secret'))
);

-- updated_at follows every change, unless the UPDATE sets it itself.
CREATE FUNCTION users_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := unixepoch();
    RETURN NEW;
END
$$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW WHEN (NEW.updated_at = OLD.updated_at) EXECUTE FUNCTION users_touch();

-- ---------------------------------------------------------------------------
-- relay_grants: one row per client address; a new login refreshes it.
-- address is one host: 192.0.2.7, or an IPv6 grant key (the daemon truncates
-- IPv6 clients to relay.ipv6_prefix bits: 2001:db8:1:2:: for a /64). inet's
-- own input check refuses what is not an address, and its output is
-- canonical, so SQLite's spelling rules (002, 003) have no counterpart here.
-- ---------------------------------------------------------------------------
CREATE TABLE relay_grants (
    address          inet PRIMARY KEY,
    "user"           text NOT NULL DEFAULT '',
    method           text NOT NULL DEFAULT 'sql',   -- pass | apop | sasl-<mechanism> | dovecot-pop3 | dovecot-imap | cli | sql
    tls              boolean NOT NULL DEFAULT false, -- the login ran over TLS
    listener         text NOT NULL DEFAULT '',
    granted_at       bigint NOT NULL DEFAULT unixepoch(),
    expires_at       bigint NOT NULL,
    hits             bigint NOT NULL DEFAULT 0,     -- relay decisions that used this grant
    last_used        bigint,
    quota_hour       bigint NOT NULL DEFAULT 0,     -- start of the hour the two counts are for
    quota_messages   bigint NOT NULL DEFAULT 0,
    quota_recipients bigint NOT NULL DEFAULT 0,
    CONSTRAINT "relay_grants.address: one address" CHECK (popgate_check(
        masklen(address) = CASE family(address) WHEN 4 THEN 32 ELSE 128 END,
        'relay_grants.address: a grant is for one address, without /prefix; write 192.0.2.7 or 2001:db8:1:2:: (a network belongs in allowed_networks)')),
    CONSTRAINT "relay_grants.address: not IPv4-mapped" CHECK (popgate_check(
        NOT (family(address) = 6 AND address <<= inet '::ffff:0.0.0.0/96'),
        'relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; write the IPv4 address a.b.c.d')),
    CONSTRAINT "relay_grants.method" CHECK (popgate_check(
        method IN ('pass', 'apop', 'dovecot-pop3', 'dovecot-imap', 'cli', 'sql') OR method ~ '^sasl-[a-z0-9]',
        'relay_grants.method: one of pass, apop, sasl-<mechanism>, dovecot-pop3, dovecot-imap, cli, sql')),
    CONSTRAINT "relay_grants.expires_at" CHECK (popgate_check(
        expires_at > granted_at,
        'relay_grants.expires_at: must be later than granted_at')),
    CONSTRAINT "relay_grants.hits" CHECK (popgate_check(hits >= 0, 'relay_grants.hits: not negative')),
    CONSTRAINT "relay_grants.quota_hour" CHECK (popgate_check(
        quota_hour >= 0 AND quota_hour % 3600 = 0,
        'relay_grants.quota_hour: the start of an hour (a multiple of 3600), or 0')),
    CONSTRAINT "relay_grants.quota_messages" CHECK (popgate_check(
        quota_messages >= 0, 'relay_grants.quota_messages: not negative')),
    CONSTRAINT "relay_grants.quota_recipients" CHECK (popgate_check(
        quota_recipients >= 0, 'relay_grants.quota_recipients: not negative'))
);
CREATE INDEX relay_grants_expires ON relay_grants (expires_at);
CREATE INDEX relay_grants_user ON relay_grants ("user");

-- Who logged in at an address while a grant lived (SQLite: migration 5).
CREATE TABLE relay_grant_logins (
    address    inet NOT NULL,     -- relay_grants.address
    "user"     text NOT NULL,
    last_login bigint NOT NULL DEFAULT unixepoch(),
    expires_at bigint NOT NULL,   -- the grant this login wrote expires then
    PRIMARY KEY (address, "user")
);
CREATE INDEX relay_grant_logins_user ON relay_grant_logins ("user");

-- Deleting grants (revoke, purge, an administrator's DELETE) forgets their
-- logins: once per statement, so a purge of many grants is one join.
CREATE FUNCTION relay_grants_forget_logins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM relay_grant_logins l USING gone WHERE l.address = gone.address;
    RETURN NULL;
END
$$;
CREATE TRIGGER relay_grants_forget_logins AFTER DELETE ON relay_grants
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION relay_grants_forget_logins();

-- ---------------------------------------------------------------------------
-- allowed_networks. cidr's input check refuses host bits under the prefix
-- (192.0.2.5/24: "Value has bits set to right of mask") and anything that is
-- not a network; one address is written 192.0.2.7 (stored as 192.0.2.7/32).
-- The GiST index answers containment: cidr >>= inet '192.0.2.7'.
-- ---------------------------------------------------------------------------
CREATE TABLE allowed_networks (
    id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    cidr       cidr NOT NULL UNIQUE,   -- 192.0.2.0/24, 2001:db8::/32, or one address
    note       text NOT NULL DEFAULT '',
    created_at bigint NOT NULL DEFAULT unixepoch(),
    expires_at bigint,                 -- NULL: never
    CONSTRAINT "allowed_networks.cidr: not IPv4-mapped" CHECK (popgate_check(
        NOT (family(cidr) = 6 AND cidr <<= cidr '::ffff:0.0.0.0/96'),
        'allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:a.b.c.d/nnn) is not accepted; write the IPv4 network a.b.c.d/nn (prefix length minus 96)')),
    CONSTRAINT "allowed_networks.expires_at" CHECK (popgate_check(
        expires_at IS NULL OR expires_at > created_at,
        'allowed_networks.expires_at: must be later than created_at'))
);
CREATE INDEX allowed_networks_containment ON allowed_networks USING gist (cidr inet_ops);

-- One row; bumped by every statement that changes allowed_networks (psql
-- included), which also notifies channel popgate_networks with the new
-- generation, so every daemon that LISTENs reloads its in-memory network
-- list at once; a daemon compares the number after a reconnect.
CREATE TABLE network_generation (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO network_generation (id, generation) VALUES (1, 0);

CREATE FUNCTION allowed_networks_bump() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    UPDATE network_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation INTO g;
    PERFORM pg_notify('popgate_networks', g::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER allowed_networks_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allowed_networks
    FOR EACH STATEMENT EXECUTE FUNCTION allowed_networks_bump();

-- ---------------------------------------------------------------------------
-- audit_log
-- ---------------------------------------------------------------------------
CREATE TABLE audit_log (
    id      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at      bigint NOT NULL DEFAULT unixepoch(),
    event   text NOT NULL,
    address text,
    "user"  text,
    detail  text NOT NULL DEFAULT '',
    CONSTRAINT "audit_log.event" CHECK (popgate_check(
        event IN ('grant', 'no-grant', 'revoke', 'deny', 'auth-fail', 'admin'),
        'audit_log.event: one of grant, no-grant, revoke, deny, auth-fail, admin'))
);
CREATE INDEX audit_log_at ON audit_log (at);

-- ---------------------------------------------------------------------------
-- A user who can no longer log in keeps no grant (SQLite: migration 5).
-- Inserting (user, detail) into the view revoke_user_grants (which holds no
-- rows) revokes the grants whose relay_grants.user is the user, with one
-- 'revoke' audit row each, and forgets the user's logins. A grant at an
-- address where another user logged in last is that user's and stays.
-- ---------------------------------------------------------------------------
CREATE VIEW revoke_user_grants AS SELECT ''::text AS "user", ''::text AS detail WHERE false;

CREATE FUNCTION revoke_user_grants_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (event, address, "user", detail)
        SELECT 'revoke', host(address), "user", NEW.detail FROM relay_grants WHERE "user" = NEW."user";
    DELETE FROM relay_grants WHERE "user" = NEW."user";
    DELETE FROM relay_grant_logins WHERE "user" = NEW."user";
    RETURN NEW;
END
$$;
CREATE TRIGGER revoke_user_grants_run INSTEAD OF INSERT ON revoke_user_grants
    FOR EACH ROW EXECUTE FUNCTION revoke_user_grants_run();

-- TG_ARGV[0]: the audit detail. OLD.name: the user as the grants name it
-- (the same as NEW.name except for a rename).
CREATE FUNCTION users_revoke_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO revoke_user_grants ("user", detail) VALUES (OLD.name, TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_delete_revokes_grants AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_revoke_grants('user deleted');

-- Whenever disabled is written true (also when it already was: a grant
-- written by hand for a disabled user goes then too).
CREATE TRIGGER users_disable_revokes_grants AFTER UPDATE OF disabled ON users
    FOR EACH ROW WHEN (NEW.disabled) EXECUTE FUNCTION users_revoke_grants('user disabled');

-- A new password or shared secret; writing the same value again revokes nothing.
CREATE TRIGGER users_password_revokes_grants AFTER UPDATE OF password_hash, shared_secret ON users
    FOR EACH ROW WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash
                       OR NEW.shared_secret IS DISTINCT FROM OLD.shared_secret)
    EXECUTE FUNCTION users_revoke_grants('password changed');

CREATE TRIGGER users_rename_revokes_grants AFTER UPDATE OF name ON users
    FOR EACH ROW WHEN (NEW.name IS DISTINCT FROM OLD.name)
    EXECUTE FUNCTION users_revoke_grants('user renamed');

-- ---------------------------------------------------------------------------
-- What an MTA may read directly: unexpired grants (client = address) and
-- current allowed networks (client = CIDR, or the bare address for a /32 or
-- /128), as text, exactly as SQLite's view shows them.
-- ---------------------------------------------------------------------------
CREATE VIEW relay_clients AS
    SELECT host(address) AS client, 'grant'::text AS source, "user", expires_at
      FROM relay_grants WHERE expires_at > unixepoch()
    UNION ALL
    SELECT CASE WHEN masklen(cidr) = CASE family(cidr) WHEN 4 THEN 32 ELSE 128 END
                THEN host(cidr) ELSE text(cidr) END,
           'network', NULL, expires_at
      FROM allowed_networks WHERE expires_at IS NULL OR expires_at > unixepoch();

-- ---------------------------------------------------------------------------
-- The MTA's question for one lookup key (deploy/postfix/pgsql-relay-clients.cf):
-- may this client relay? True for an address with an unexpired grant (its
-- own, or for IPv6 the grant of its ipv6_prefix, as the daemon keys them) or
-- inside an unexpired allowed network. Any other key is false, never an
-- error: Postfix's check_client_access also asks for the client's host name
-- and for the address with its last part cut off ("192.0.2", "2001:db8:"),
-- and an error would be a temporary failure for the client.
-- ---------------------------------------------------------------------------
CREATE FUNCTION relay_client_allowed(client text, ipv6_prefix integer DEFAULT 64) RETURNS boolean
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    a inet;
    key inet;
BEGIN
    -- Postfix cuts IPv4 keys at dots: only a dotted quad is an address.
    IF client !~ '^([0-9]{1,3}\.){3}[0-9]{1,3}$' AND client !~ '^[0-9a-f:]{2,39}$' THEN
        RETURN false;
    END IF;
    BEGIN
        a := client::inet;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN false;
    END;
    IF family(a) = 6 AND a <<= inet '::ffff:0.0.0.0/96' THEN
        RETURN false;   -- never a key: Postfix writes an IPv4 client as such
    END IF;
    key := CASE WHEN family(a) = 6 AND ipv6_prefix BETWEEN 0 AND 127
                THEN set_masklen(network(set_masklen(a, ipv6_prefix))::inet, 128) ELSE a END;
    RETURN EXISTS (SELECT 1 FROM relay_grants
                    WHERE address IN (a, key) AND expires_at > unixepoch())
        OR EXISTS (SELECT 1 FROM allowed_networks
                    WHERE cidr >>= a AND (expires_at IS NULL OR expires_at > unixepoch()));
END
$$;
