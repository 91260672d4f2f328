-- popgate schema, migration 4: grants written for logins at Dovecot.
-- The HTTP listener's Dovecot auth-policy endpoint grants relaying after a
-- successful POP3 or IMAP login at an existing Dovecot, and names that in
-- relay_grants.method as 'dovecot-pop3' or 'dovecot-imap'. Migration 1's
-- CHECK on the column allows neither.
--
-- SQLite cannot ALTER a CHECK constraint. Rebuilding relay_grants would
-- drop and re-create every address trigger of migrations 2 and 3; instead
-- the constraint's text in the stored schema is widened in place, the
-- procedure SQLite documents for changing CHECK constraints
-- (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of
-- Table Schema Changes"): a wider CHECK holds for every row the narrower one
-- accepted, so the file format and the rows are untouched.

PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(replace(sql,
           '"relay_grants.method: one of pass, apop, sasl-<mechanism>, cli, sql"',
           '"relay_grants.method: one of pass, apop, sasl-<mechanism>, dovecot-pop3, dovecot-imap, cli, sql"'),
           'method IN (''pass'', ''apop'', ''cli'', ''sql'')',
           'method IN (''pass'', ''apop'', ''dovecot-pop3'', ''dovecot-imap'', ''cli'', ''sql'')')
 WHERE type = 'table' AND name = 'relay_grants';
-- RESET: this connection reads the schema again (the CHECK it enforces).
PRAGMA writable_schema = RESET;

-- A schema whose text differs from migration 1's (edited by hand) is left
-- alone: the migration fails, and nothing of it is applied.
CREATE TEMP TABLE migration_004_check (
    widened INTEGER CONSTRAINT "migration 4: relay_grants.method's CHECK is not the one migration 1 wrote; widen it by hand to allow 'dovecot-pop3' and 'dovecot-imap'"
        CHECK (widened = 1)
);
INSERT INTO migration_004_check
    SELECT instr(sql, '''dovecot-imap''') > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'relay_grants';
DROP TABLE migration_004_check;

-- Any schema change bumps the schema cookie, so that other connections
-- (other processes included) read the new constraint at their next statement.
CREATE TABLE migration_004_bump (x INTEGER) STRICT;
DROP TABLE migration_004_bump;
