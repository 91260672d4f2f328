-- popgate schema, migration 3: only the canonical spelling of an address.
--
-- The daemon looks a grant up by the text it writes itself, and a row spelt
-- any other way never matched: '0::1', '0:0:0:0:0:0:0:1' and the IPv4-mapped
-- '::ffff:7f00:3' passed migration 2's rules and then sat in the table doing
-- nothing. A network with host bits ('127.0.7.9/16') was silently widened to
-- 127.0.0.0/16. This migration adds, in the style of migration 2 (one rule a
-- pair of triggers, INSERT and UPDATE, each message saying what to write
-- instead), the rules that leave one spelling per address:
--   IPv4   a dotted quad without leading zeros (migration 2 already)
--   IPv6   RFC 5952 text: lowercase (migration 2 already), no leading zeros in
--          a group, :: for the longest run of two or more zero groups (the
--          first of equally long runs) and for nothing else; no IPv4-mapped
--          address in any spelling: write the IPv4 address
--   networks   additionally no bit set under the prefix length
-- A value that breaks a rule of migration 2 is left to that rule (each rule
-- below first checks that the value passed them), so its message stays the
-- one that names the first thing to fix.
--
-- SQLite 3.40 (Debian 12) takes only a literal as RAISE's message, so a
-- message cannot quote the canonical form of the value at hand; it gives the
-- rule with an example instead. `popgate grant add` and `popgate allow add`
-- name the exact canonical form, and so does the daemon's warning about a row.
--
-- Existing rows are left as they are: this migration creates triggers only,
-- so it cannot fail on a deployed database and changes no grant or network.
-- Rewriting rows was considered and refused: a non-canonical grant never
-- matched, and rewriting it would open a relay that nobody saw working; a
-- network with host bits is ambiguous (192.0.2.5/24 may mean 192.0.2.0/24 or
-- the one host 192.0.2.5). The daemon reports each such row once in its log
-- (at start, at every purge for grants, at every reload of the networks), with
-- the canonical form, and then:
--   - a grant not in canonical form still never matches (as before);
--   - a network with host bits is no longer masked but ignored, as Postfix's
--     cidr tables do ("non-null host address bits ..., perhaps you should use
--     ... instead"): a relay is never opened wider than the row says;
--   - any other network not in canonical form is used as what it means.
-- `popgate allow list` and `popgate grant list` mark such rows.
--
-- How to read a rule: as in migration 2, the trigger refuses the row when its
-- WHEN condition is true. Each condition reads from a derived table:
--   a        the address (relay_grants.address; for allowed_networks.cidr the
--            text before the first '/')
--   colons   the number of colons in a
--   shaped   a is IPv6 that migration 2's shape rules let through: a colon,
--            only 0-9, a-f and colons, no group of five digits, at most one
--            :: and no :::, 2 to 7 colons
--   v6       shaped, and complete: eight groups, or fewer with ::, and no
--            single colon at either end; what inet_pton(3) reads as IPv6
--   bits     (networks) the text after the first '/', NULL if there is none
-- With a containing ::, colons - (a GLOB '::*') - (a GLOB '*::') is the
-- number of groups written out, so 8 minus it is the number of zero groups
-- that :: stands for. ':' || a || ':' puts a colon on both sides of every
-- group, so GLOB '*:0:0:*' finds two zero groups in a row.
-- The host-bit rules split the address into its numbers with json_each (an
-- IPv4 address becomes the JSON array [192,0,2,5]; IPv6, with :: expanded to
-- its zero groups, ["2001","db8","0",...]) and look at the bits of number i
-- that lie under the prefix: 8 * i + 8 - bits of them for IPv4 (16 * i + 16
-- - bits for IPv6), at least 0 and at most all. json_each is built into
-- SQLite since 3.38.

-- ===========================================================================
-- relay_grants.address
-- ===========================================================================

-- Not eight groups and no :: (1:2:3), or a single colon at either end
-- (:1::2, 1::2:).
CREATE TRIGGER relay_grants_address_ipv6_groups_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT shaped AND NOT v6
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 is eight groups, or fewer with :: in place of zero groups, and starts and ends with a group or ::; write 2001:db8::1, not 2001:db8:1 or :2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_groups_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT shaped AND NOT v6
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 is eight groups, or fewer with :: in place of zero groups, and starts and ends with a group or ::; write 2001:db8::1, not 2001:db8:1 or :2001:db8::1'); END;

-- A group with a leading zero (0db8, 00).
CREATE TRIGGER relay_grants_address_ipv6_leading_zero_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND ':' || a GLOB '*:0[0-9a-f]*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: leading zeros in an IPv6 group are not accepted; write 2001:db8::1, not 2001:0db8::0001'); END;
CREATE TRIGGER relay_grants_address_ipv6_leading_zero_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND ':' || a GLOB '*:0[0-9a-f]*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: leading zeros in an IPv6 group are not accepted; write 2001:db8::1, not 2001:0db8::0001'); END;

-- :: in place of one zero group: seven groups written out (RFC 5952 4.2.2).
CREATE TRIGGER relay_grants_address_ipv6_single_zero_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND a GLOB '*::*' AND colons - (a GLOB '::*') - (a GLOB '*::') = 7
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: stands for two or more zero groups, never one; write 2001:db8:0:1:1:1:1:1, not 2001:db8::1:1:1:1:1'); END;
CREATE TRIGGER relay_grants_address_ipv6_single_zero_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND a GLOB '*::*' AND colons - (a GLOB '::*') - (a GLOB '*::') = 7
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: stands for two or more zero groups, never one; write 2001:db8:0:1:1:1:1:1, not 2001:db8::1:1:1:1:1'); END;

-- No ::, and two zero groups in a row (RFC 5952 4.2.1).
CREATE TRIGGER relay_grants_address_ipv6_uncompressed_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND a NOT GLOB '*::*' AND ':' || a || ':' GLOB '*:0:0:*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: two or more zero groups in a row are written ::; write 2001:db8::1, not 2001:db8:0:0:0:0:0:1'); END;
CREATE TRIGGER relay_grants_address_ipv6_uncompressed_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND a NOT GLOB '*::*' AND ':' || a || ':' GLOB '*:0:0:*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: two or more zero groups in a row are written ::; write 2001:db8::1, not 2001:db8:0:0:0:0:0:1'); END;

-- A zero group next to ::, which should have taken it in (0::1, 1:0::).
CREATE TRIGGER relay_grants_address_ipv6_zero_beside_double_colon_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND (':' || a || ':' GLOB '*:0::*' OR ':' || a || ':' GLOB '*::0:*')
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: takes in every zero group beside it; write 2001:db8::1, not 2001:db8:0::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_zero_beside_double_colon_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND (':' || a || ':' GLOB '*:0::*' OR ':' || a || ':' GLOB '*::0:*')
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: takes in every zero group beside it; write 2001:db8::1, not 2001:db8:0::1'); END;

-- A run of zero groups written out that is longer than the one :: stands
-- for, or as long and before it (RFC 5952 4.2.3). With :: standing for 2
-- groups, 6 are written out and a longer run has 3 or more zeros; for 3,
-- 5 are written out; for 4 or more, no run of that length is left to write.
CREATE TRIGGER relay_grants_address_ipv6_longest_run_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND a GLOB '*::*'
             AND ((8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 2 AND (':' || a || ':' GLOB '*:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:*::*'))
              OR (8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 3 AND (':' || a || ':' GLOB '*:0:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:0:*::*')))
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: stands for the longest run of zero groups, the first one of equally long runs; write 2001:db8::1:0:0:1, not 2001:db8:0:0:1::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_longest_run_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND a GLOB '*::*'
             AND ((8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 2 AND (':' || a || ':' GLOB '*:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:*::*'))
              OR (8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 3 AND (':' || a || ':' GLOB '*:0:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:0:*::*')))
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: :: stands for the longest run of zero groups, the first one of equally long runs; write 2001:db8::1:0:0:1, not 2001:db8:0:0:1::1'); END;

-- An IPv4-mapped address in hex, ::ffff:X:Y (the dotted form is migration
-- 2's ipv4_mapped rule): the daemon sees such a client as the IPv4 address
-- and never looks it up this way. Any other spelling of it breaks a rule
-- above first.
CREATE TRIGGER relay_grants_address_ipv4_mapped_hex_insert BEFORE INSERT ON relay_grants
    WHEN (SELECT v6 AND a GLOB '::ffff:*' AND colons = 4
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv4-mapped IPv6 (::ffff:c000:207) is not accepted; write the IPv4 address its last two groups spell (192.0.2.7)'); END;
CREATE TRIGGER relay_grants_address_ipv4_mapped_hex_update BEFORE UPDATE OF address ON relay_grants
    WHEN (SELECT v6 AND a GLOB '::ffff:*' AND colons = 4
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT NEW.address AS a, length(NEW.address) - length(replace(NEW.address, ':', '')) AS colons))))
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv4-mapped IPv6 (::ffff:c000:207) is not accepted; write the IPv4 address its last two groups spell (192.0.2.7)'); END;

-- ===========================================================================
-- allowed_networks.cidr: the same rules for the address part, then host bits.
-- ===========================================================================

-- Not eight groups and no :: (1:2:3), or a single colon at either end
-- (:1::2, 1::2:).
CREATE TRIGGER allowed_networks_cidr_ipv6_groups_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT shaped AND NOT v6
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 is eight groups, or fewer with :: in place of zero groups, and starts and ends with a group or ::; write 2001:db8::/32, not 2001:db8:0/32 or :2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_groups_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT shaped AND NOT v6
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 is eight groups, or fewer with :: in place of zero groups, and starts and ends with a group or ::; write 2001:db8::/32, not 2001:db8:0/32 or :2001:db8::/32'); END;

-- A group with a leading zero (0db8, 00).
CREATE TRIGGER allowed_networks_cidr_ipv6_leading_zero_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND ':' || a GLOB '*:0[0-9a-f]*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: leading zeros in an IPv6 group are not accepted; write 2001:db8::/32, not 2001:0db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_leading_zero_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND ':' || a GLOB '*:0[0-9a-f]*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: leading zeros in an IPv6 group are not accepted; write 2001:db8::/32, not 2001:0db8::/32'); END;

-- :: in place of one zero group: seven groups written out (RFC 5952 4.2.2).
CREATE TRIGGER allowed_networks_cidr_ipv6_single_zero_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '*::*' AND colons - (a GLOB '::*') - (a GLOB '*::') = 7
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: stands for two or more zero groups, never one; write 2001:db8:0:1:1:1:1:1/128, not 2001:db8::1:1:1:1:1/128'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_single_zero_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '*::*' AND colons - (a GLOB '::*') - (a GLOB '*::') = 7
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: stands for two or more zero groups, never one; write 2001:db8:0:1:1:1:1:1/128, not 2001:db8::1:1:1:1:1/128'); END;

-- No ::, and two zero groups in a row (RFC 5952 4.2.1).
CREATE TRIGGER allowed_networks_cidr_ipv6_uncompressed_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND a NOT GLOB '*::*' AND ':' || a || ':' GLOB '*:0:0:*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: two or more zero groups in a row are written ::; write 2001:db8::/32, not 2001:db8:0:0:0:0:0:0/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_uncompressed_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND a NOT GLOB '*::*' AND ':' || a || ':' GLOB '*:0:0:*'
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: two or more zero groups in a row are written ::; write 2001:db8::/32, not 2001:db8:0:0:0:0:0:0/32'); END;

-- A zero group next to ::, which should have taken it in (0::1, 1:0::).
CREATE TRIGGER allowed_networks_cidr_ipv6_zero_beside_double_colon_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND (':' || a || ':' GLOB '*:0::*' OR ':' || a || ':' GLOB '*::0:*')
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: takes in every zero group beside it; write 2001:db8::/32, not 2001:db8:0::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_zero_beside_double_colon_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND (':' || a || ':' GLOB '*:0::*' OR ':' || a || ':' GLOB '*::0:*')
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: takes in every zero group beside it; write 2001:db8::/32, not 2001:db8:0::/32'); END;

-- A run of zero groups written out that is longer than the one :: stands
-- for, or as long and before it (RFC 5952 4.2.3). With :: standing for 2
-- groups, 6 are written out and a longer run has 3 or more zeros; for 3,
-- 5 are written out; for 4 or more, no run of that length is left to write.
CREATE TRIGGER allowed_networks_cidr_ipv6_longest_run_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '*::*'
             AND ((8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 2 AND (':' || a || ':' GLOB '*:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:*::*'))
              OR (8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 3 AND (':' || a || ':' GLOB '*:0:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:0:*::*')))
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: stands for the longest run of zero groups, the first one of equally long runs; write 2001:0:0:1::/64, not 2001::1:0:0:0:0/64'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_longest_run_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '*::*'
             AND ((8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 2 AND (':' || a || ':' GLOB '*:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:*::*'))
              OR (8 - (colons - (a GLOB '::*') - (a GLOB '*::')) = 3 AND (':' || a || ':' GLOB '*:0:0:0:0:*' OR ':' || a || ':' GLOB '*:0:0:0:*::*')))
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: :: stands for the longest run of zero groups, the first one of equally long runs; write 2001:0:0:1::/64, not 2001::1:0:0:0:0/64'); END;

-- An IPv4-mapped address in hex, ::ffff:X:Y (the dotted form is migration
-- 2's ipv4_mapped rule): the daemon sees such a client as the IPv4 address
-- and never looks it up this way. Any other spelling of it breaks a rule
-- above first.
CREATE TRIGGER allowed_networks_cidr_ipv4_mapped_hex_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '::ffff:*' AND colons = 4
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:c000:200/120) is not accepted; write the IPv4 network its last two groups spell, with 96 taken off the prefix length (192.0.2.0/24)'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_mapped_hex_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT v6 AND a GLOB '::ffff:*' AND colons = 4
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:c000:200/120) is not accepted; write the IPv4 network its last two groups spell, with 96 taken off the prefix length (192.0.2.0/24)'); END;

-- IPv4 with /prefix: a bit set under the prefix, in one of the four
-- numbers. Only for an address and prefix that the other rules accept.
CREATE TRIGGER allowed_networks_cidr_ipv4_host_bits_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT CASE WHEN a NOT GLOB '*[^0-9.]*' AND length(a) - length(replace(a, '.', '')) = 3
                       AND '.' || a || '.' NOT GLOB '*..*' AND '.' || a || '.' NOT GLOB '*.0[0-9]*'
                       AND bits GLOB '[0-9]*' AND bits NOT GLOB '*[^0-9]*' AND bits NOT GLOB '0?*' AND CAST(bits AS INTEGER) <= 32
                  THEN (SELECT max(value) <= 255 AND sum(value % (1 << max(0, min(8, 8 * key + 8 - bits))) <> 0) > 0
                          FROM json_each('[' || replace(a, '.', ',') || ']'))
                  ELSE 0 END
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: host bits are set under the prefix length; write the network (192.0.2.0/24, not 192.0.2.5/24), or one address as 192.0.2.5/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_host_bits_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT CASE WHEN a NOT GLOB '*[^0-9.]*' AND length(a) - length(replace(a, '.', '')) = 3
                       AND '.' || a || '.' NOT GLOB '*..*' AND '.' || a || '.' NOT GLOB '*.0[0-9]*'
                       AND bits GLOB '[0-9]*' AND bits NOT GLOB '*[^0-9]*' AND bits NOT GLOB '0?*' AND CAST(bits AS INTEGER) <= 32
                  THEN (SELECT max(value) <= 255 AND sum(value % (1 << max(0, min(8, 8 * key + 8 - bits))) <> 0) > 0
                          FROM json_each('[' || replace(a, '.', ',') || ']'))
                  ELSE 0 END
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: host bits are set under the prefix length; write the network (192.0.2.0/24, not 192.0.2.5/24), or one address as 192.0.2.5/32'); END;

-- IPv6 with /prefix: a bit set under the prefix, in one of the eight groups
-- (:: expanded first, each group padded to four hex digits and read as a
-- number).
CREATE TRIGGER allowed_networks_cidr_ipv6_host_bits_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT CASE WHEN v6 AND bits GLOB '[0-9]*' AND bits NOT GLOB '*[^0-9]*' AND bits NOT GLOB '0?*' AND CAST(bits AS INTEGER) <= 128
                  THEN EXISTS (SELECT 1 FROM (SELECT key AS i, substr('000' || value, -4, 4) AS g FROM json_each(
                                 '["' || replace(replace(iif(a GLOB '::*', '0', '') || a || iif(a GLOB '*::', '0', ''), '::',
                                         ':' || substr('0:0:0:0:0:0:0:', 1, 2 * (8 - colons))), ':', '","') || '"]'))
                                WHERE ((instr('0123456789abcdef', substr(g, 1, 1)) - 1) * 4096 + (instr('0123456789abcdef', substr(g, 2, 1)) - 1) * 256
                                       + (instr('0123456789abcdef', substr(g, 3, 1)) - 1) * 16 + instr('0123456789abcdef', substr(g, 4, 1)) - 1)
                                      % (1 << max(0, min(16, 16 * i + 16 - bits))) <> 0)
                  ELSE 0 END
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: host bits are set under the prefix length; write the network (2001:db8::/32, not 2001:db8::1/32), or one address as 2001:db8::1/128'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_host_bits_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT CASE WHEN v6 AND bits GLOB '[0-9]*' AND bits NOT GLOB '*[^0-9]*' AND bits NOT GLOB '0?*' AND CAST(bits AS INTEGER) <= 128
                  THEN EXISTS (SELECT 1 FROM (SELECT key AS i, substr('000' || value, -4, 4) AS g FROM json_each(
                                 '["' || replace(replace(iif(a GLOB '::*', '0', '') || a || iif(a GLOB '*::', '0', ''), '::',
                                         ':' || substr('0:0:0:0:0:0:0:', 1, 2 * (8 - colons))), ':', '","') || '"]'))
                                WHERE ((instr('0123456789abcdef', substr(g, 1, 1)) - 1) * 4096 + (instr('0123456789abcdef', substr(g, 2, 1)) - 1) * 256
                                       + (instr('0123456789abcdef', substr(g, 3, 1)) - 1) * 16 + instr('0123456789abcdef', substr(g, 4, 1)) - 1)
                                      % (1 << max(0, min(16, 16 * i + 16 - bits))) <> 0)
                  ELSE 0 END
            FROM (SELECT *, shaped AND a NOT GLOB ':[^:]*' AND a NOT GLOB '*[^:]:' AND (a GLOB '*::*' OR colons = 7) AS v6
            FROM (SELECT *, a GLOB '*:*' AND a NOT GLOB '*[^0-9a-f:]*' AND a NOT GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
                            AND a NOT GLOB '*::*::*' AND a NOT GLOB '*:::*' AND colons BETWEEN 2 AND 7 AS shaped
            FROM (SELECT a, length(a) - length(replace(a, ':', '')) AS colons, bits
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS a,
                         CASE WHEN instr(NEW.cidr, '/') > 0 THEN substr(NEW.cidr, instr(NEW.cidr, '/') + 1) END AS bits)))))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: host bits are set under the prefix length; write the network (2001:db8::/32, not 2001:db8::1/32), or one address as 2001:db8::1/128'); END;
