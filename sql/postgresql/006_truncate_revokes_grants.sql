-- popgate schema (PostgreSQL), version 6: TRUNCATE users revokes grants.
--
-- SQLite's migration 6 makes REPLACE INTO users revoke as an UPDATE would.
-- PostgreSQL has no REPLACE (INSERT ... ON CONFLICT DO UPDATE fires the
-- UPDATE triggers of version 5), but TRUNCATE fires no row triggers: every
-- user went and their grants stayed. Before a TRUNCATE of users, each
-- user's grants are revoked, one 'revoke' audit row each (detail 'user
-- deleted'), as DELETE FROM users does.

CREATE FUNCTION users_truncate_revokes_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO revoke_user_grants ("user", detail) SELECT name, 'user deleted' FROM users;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_truncate_revokes_grants BEFORE TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION users_truncate_revokes_grants();

-- Likewise TRUNCATE relay_grants, which fires no DELETE trigger: the logins
-- of the grants it deleted go with them.
CREATE FUNCTION relay_grants_truncate_forgets_logins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM relay_grant_logins;
    RETURN NULL;
END
$$;

CREATE TRIGGER relay_grants_truncate_forgets_logins AFTER TRUNCATE ON relay_grants
    FOR EACH STATEMENT EXECUTE FUNCTION relay_grants_truncate_forgets_logins();
