-- Example roles for popgate on PostgreSQL. Not a migration: popgate never
-- runs this file. Run it as a superuser in popgate's database once the
-- schema is there (popgate serve or popgate db migrate made it):
--     psql -d popgate -v ON_ERROR_STOP=1 -f roles.sql
-- then give each login role its password (never written in a file you keep):
--     psql -d popgate -c '\password popgate_mta'
-- It can be run again; a role that exists is kept.
--
-- popgate, the daemon (and the popgate command): the simplest setup makes
-- it the database's owner, so that it applies new migrations itself at
-- start:
--     CREATE ROLE popgate LOGIN;
--     CREATE DATABASE popgate OWNER popgate;
-- The GRANTs below are what it needs when another role owns the schema (an
-- administrator who runs `popgate db migrate` as that role before each
-- upgrade): reading and writing rows, nothing else. For an owner they
-- change nothing.
--
-- popgate_mta, an MTA's lookups (deploy/postfix/pgsql-relay-clients.cf):
-- reads grants and networks and nothing else: not users (password hashes,
-- APOP secrets), not the audit log; writes nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'popgate') THEN
        CREATE ROLE popgate LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'popgate_mta') THEN
        CREATE ROLE popgate_mta LOGIN;
    END IF;
    -- Who may connect at all: these two (and superusers), not PUBLIC.
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO popgate, popgate_mta', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO popgate, popgate_mta;

-- The daemon.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON users, relay_grants, relay_grant_logins, allowed_networks, audit_log TO popgate;
GRANT SELECT, UPDATE ON network_generation TO popgate;    -- the allowed_networks triggers bump it
GRANT SELECT ON schema_migrations, relay_clients TO popgate;
GRANT INSERT ON revoke_user_grants TO popgate;            -- the users triggers revoke through it
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO popgate; -- allowed_networks.id, audit_log.id

-- The MTA: read-only, also for any transaction it opens.
GRANT SELECT ON relay_grants, allowed_networks, relay_clients TO popgate_mta;
ALTER ROLE popgate_mta SET default_transaction_read_only = on;
