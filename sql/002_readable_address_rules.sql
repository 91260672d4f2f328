-- popgate schema, migration 2: address and network rules an administrator can read.
--
-- Migration 1 checked relay_grants.address and allowed_networks.cidr with four
-- generated one-line triggers that answered every mistake with one message.
-- This migration drops them and states the same checks as short rules, one
-- trigger per rule, each saying what is wrong and what to write instead. It
-- accepts and refuses exactly the values that migration 1 did, and it touches
-- no row: existing databases keep all their grants and networks.
--
-- Why triggers and not named CHECK constraints: SQLite cannot add a CHECK to
-- an existing table, so CHECKs would mean rebuilding both tables on every
-- deployed database (copy the rows, drop, rename, recreate the indexes, the
-- network_generation triggers and the relay_clients view) while the daemon
-- and Postfix read them. A trigger is dropped and created in place, and a
-- network rule can name the part of the cidr it checks (`host`, the text
-- before '/'), which a CHECK could only repeat as an expression. The price:
-- SQLite has no "BEFORE INSERT OR UPDATE", so each rule appears twice, for
-- INSERT and for UPDATE of the column, with the same condition and message.
--
-- How to read a rule: the trigger refuses the row when its WHEN condition is
-- true; a value is accepted when no rule refuses it. GLOB is case-sensitive:
-- '*' is any text, [0-9a-f] one character of the set, [^0-9.] one character
-- not in it. length(x) - length(replace(x, '.', '')) counts the dots in x.
-- When a value breaks several rules, SQLite reports one of them.
--
-- An address (or the address part of a network) falls in one of three groups,
-- and each address rule looks at one group:
--   IPv4 shape   only digits and dots                  NOT GLOB '*[^0-9.]*'
--   IPv6 shape   a colon; only 0-9, a-f and colons     GLOB '*:*' AND NOT GLOB '*[^0-9a-f:]*'
--   the rest     refused by a character rule
-- The IPv6 rules check the shape, not every detail of the text: 1:2:3 passes
-- them. The daemon parses every row again and ignores, with a warning in its
-- log, a row it cannot read, so such a row never opens the relay.

DROP TRIGGER IF EXISTS relay_grants_address_insert;
DROP TRIGGER IF EXISTS relay_grants_address_update;
DROP TRIGGER IF EXISTS allowed_networks_cidr_insert;
DROP TRIGGER IF EXISTS allowed_networks_cidr_update;

-- ===========================================================================
-- relay_grants.address: one IPv4 address (192.0.2.7) or one lowercase IPv6
-- address (2001:db8::1; the daemon writes 2001:db8:1:2:: for a /64 grant).
-- ===========================================================================

-- Characters ---------------------------------------------------------------

-- No colon, and a character that is not a digit, a dot or '/': a host name,
-- a space, anything else.
CREATE TRIGGER relay_grants_address_not_ip_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address NOT GLOB '*:*' AND NEW.address GLOB '*[^0-9./]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: not an IP address; write an IPv4 address such as 192.0.2.7 or an IPv6 address such as 2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_not_ip_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address NOT GLOB '*:*' AND NEW.address GLOB '*[^0-9./]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: not an IP address; write an IPv4 address such as 192.0.2.7 or an IPv6 address such as 2001:db8::1'); END;

-- A /prefix: a grant is for one address.
CREATE TRIGGER relay_grants_address_prefix_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*/*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: a grant is for one address, without /prefix; write 192.0.2.7 or 2001:db8:1:2:: (a network belongs in allowed_networks)'); END;
CREATE TRIGGER relay_grants_address_prefix_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*/*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: a grant is for one address, without /prefix; write 192.0.2.7 or 2001:db8:1:2:: (a network belongs in allowed_networks)'); END;

-- IPv6 with a character that is not a hex digit, a colon, a dot or '/':
-- [brackets], a %zone, a space...
CREATE TRIGGER relay_grants_address_ipv6_chars_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*[^0-9a-fA-F:./]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv6 address has only hex digits and colons (no [brackets], no %zone); write 2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_chars_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*[^0-9a-fA-F:./]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv6 address has only hex digits and colons (no [brackets], no %zone); write 2001:db8::1'); END;

-- IPv6 with an uppercase hex digit.
CREATE TRIGGER relay_grants_address_ipv6_uppercase_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*[A-F]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: uppercase IPv6 is not accepted; write it in lowercase, e.g. 2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_uppercase_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*[A-F]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: uppercase IPv6 is not accepted; write it in lowercase, e.g. 2001:db8::1'); END;

-- Colons and dots together (other than ::ffff:a.b.c.d, next rule): an
-- address with a :port, or IPv6 with a dotted IPv4 tail (64:ff9b::192.0.2.7).
CREATE TRIGGER relay_grants_address_mixed_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*.*' AND lower(NEW.address) NOT GLOB '*:ffff:*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: mixes colons and dots; write an IPv4 address without :port (192.0.2.7) or IPv6 all in hex (64:ff9b::c000:207, not 64:ff9b::192.0.2.7)'); END;
CREATE TRIGGER relay_grants_address_mixed_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*.*' AND lower(NEW.address) NOT GLOB '*:ffff:*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: mixes colons and dots; write an IPv4 address without :port (192.0.2.7) or IPv6 all in hex (64:ff9b::c000:207, not 64:ff9b::192.0.2.7)'); END;

-- IPv4-mapped IPv6: the daemon sees such a client as the IPv4 address.
CREATE TRIGGER relay_grants_address_ipv4_mapped_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*.*' AND lower(NEW.address) GLOB '*:ffff:*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; write the IPv4 address a.b.c.d'); END;
CREATE TRIGGER relay_grants_address_ipv4_mapped_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address GLOB '*.*' AND lower(NEW.address) GLOB '*:ffff:*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; write the IPv4 address a.b.c.d'); END;

-- IPv4 shape (only digits and dots) -----------------------------------------

-- Not four numbers: other than three dots, a dot at either end, or two dots
-- together.
CREATE TRIGGER relay_grants_address_ipv4_parts_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*'
     AND (length(NEW.address) - length(replace(NEW.address, '.', '')) <> 3 OR '.' || NEW.address || '.' GLOB '*..*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv4 address is four numbers separated by dots; write 192.0.2.7'); END;
CREATE TRIGGER relay_grants_address_ipv4_parts_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*'
     AND (length(NEW.address) - length(replace(NEW.address, '.', '')) <> 3 OR '.' || NEW.address || '.' GLOB '*..*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv4 address is four numbers separated by dots; write 192.0.2.7'); END;

-- A number with a leading zero (some tools read 010 as octal 8).
CREATE TRIGGER relay_grants_address_ipv4_leading_zero_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*' AND '.' || NEW.address || '.' GLOB '*.0[0-9]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: leading zeros in an IPv4 address are not accepted; write 192.0.2.7, not 192.000.002.007'); END;
CREATE TRIGGER relay_grants_address_ipv4_leading_zero_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*' AND '.' || NEW.address || '.' GLOB '*.0[0-9]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: leading zeros in an IPv4 address are not accepted; write 192.0.2.7, not 192.000.002.007'); END;

-- A number over 255: 256-259, 260-299, 300-999, or four digits and more.
CREATE TRIGGER relay_grants_address_ipv4_range_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*'
     AND ('.' || NEW.address || '.' GLOB '*.25[6-9].*' OR '.' || NEW.address || '.' GLOB '*.2[6-9][0-9].*'
          OR '.' || NEW.address || '.' GLOB '*.[3-9][0-9][0-9].*' OR NEW.address GLOB '*[0-9][0-9][0-9][0-9]*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv4 number is 0 to 255; write 192.0.2.7'); END;
CREATE TRIGGER relay_grants_address_ipv4_range_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address NOT GLOB '*[^0-9.]*'
     AND ('.' || NEW.address || '.' GLOB '*.25[6-9].*' OR '.' || NEW.address || '.' GLOB '*.2[6-9][0-9].*'
          OR '.' || NEW.address || '.' GLOB '*.[3-9][0-9][0-9].*' OR NEW.address GLOB '*[0-9][0-9][0-9][0-9]*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv4 number is 0 to 255; write 192.0.2.7'); END;

-- IPv6 shape (a colon, and only 0-9, a-f and colons) --------------------------

-- A group of more than four hex digits.
CREATE TRIGGER relay_grants_address_ipv6_group_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND NEW.address GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv6 group has at most four hex digits; write 2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_group_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND NEW.address GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: an IPv6 group has at most four hex digits; write 2001:db8::1'); END;

-- :: twice, or three colons in a row.
CREATE TRIGGER relay_grants_address_ipv6_double_colon_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND (NEW.address GLOB '*::*::*' OR NEW.address GLOB '*:::*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 has at most one :: and never :::; write 2001:db8::1'); END;
CREATE TRIGGER relay_grants_address_ipv6_double_colon_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND (NEW.address GLOB '*::*::*' OR NEW.address GLOB '*:::*')
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 has at most one :: and never :::; write 2001:db8::1'); END;

-- Fewer than 2 or more than 7 colons.
CREATE TRIGGER relay_grants_address_ipv6_colons_insert BEFORE INSERT ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND length(NEW.address) - length(replace(NEW.address, ':', '')) NOT BETWEEN 2 AND 7
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 has 2 to 7 colons; write eight groups (2001:db8:0:0:0:0:0:1) or shorten zeros with :: (2001:db8::1)'); END;
CREATE TRIGGER relay_grants_address_ipv6_colons_update BEFORE UPDATE OF address ON relay_grants
    WHEN NEW.address GLOB '*:*' AND NEW.address NOT GLOB '*[^0-9a-f:]*'
     AND length(NEW.address) - length(replace(NEW.address, ':', '')) NOT BETWEEN 2 AND 7
BEGIN SELECT RAISE(ABORT, 'relay_grants.address: IPv6 has 2 to 7 colons; write eight groups (2001:db8:0:0:0:0:0:1) or shorten zeros with :: (2001:db8::1)'); END;

-- ===========================================================================
-- allowed_networks.cidr: an address, then optionally / and a prefix length
-- (192.0.2.0/24, 2001:db8::/32, or one address: 192.0.2.7). The address part
-- follows the same rules as relay_grants.address; in a rule,
--     (SELECT <rule> FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
-- is <rule> applied to `host`, the text before the first '/' (all of it if
-- there is none), and
--     (SELECT <rule> FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
-- is <rule> applied to `bits`, the text after the first '/'.
-- Host bits under the prefix (192.0.2.5/24) are accepted and masked by the
-- daemon, as Postfix's cidr tables do; `popgate allow add` refuses them.
-- ===========================================================================

-- Characters of the host part ---------------------------------------------

CREATE TRIGGER allowed_networks_cidr_not_ip_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host NOT GLOB '*:*' AND host GLOB '*[^0-9.]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: not a network; write 192.0.2.0/24, 2001:db8::/32 or one address such as 192.0.2.7'); END;
CREATE TRIGGER allowed_networks_cidr_not_ip_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host NOT GLOB '*:*' AND host GLOB '*[^0-9.]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: not a network; write 192.0.2.0/24, 2001:db8::/32 or one address such as 192.0.2.7'); END;

CREATE TRIGGER allowed_networks_cidr_ipv6_chars_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*[^0-9a-fA-F:.]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 network has only hex digits and colons before the /prefix (no [brackets], no %zone); write 2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_chars_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*[^0-9a-fA-F:.]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 network has only hex digits and colons before the /prefix (no [brackets], no %zone); write 2001:db8::/32'); END;

CREATE TRIGGER allowed_networks_cidr_ipv6_uppercase_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*[A-F]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: uppercase IPv6 is not accepted; write it in lowercase, e.g. 2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_uppercase_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*[A-F]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: uppercase IPv6 is not accepted; write it in lowercase, e.g. 2001:db8::/32'); END;

CREATE TRIGGER allowed_networks_cidr_mixed_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*.*' AND lower(host) NOT GLOB '*:ffff:*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: mixes colons and dots; write an IPv4 network without :port (192.0.2.0/24) or IPv6 all in hex (64:ff9b::c000:0/120, not 64:ff9b::192.0.0.0/120)'); END;
CREATE TRIGGER allowed_networks_cidr_mixed_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*.*' AND lower(host) NOT GLOB '*:ffff:*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: mixes colons and dots; write an IPv4 network without :port (192.0.2.0/24) or IPv6 all in hex (64:ff9b::c000:0/120, not 64:ff9b::192.0.0.0/120)'); END;

CREATE TRIGGER allowed_networks_cidr_ipv4_mapped_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*.*' AND lower(host) GLOB '*:ffff:*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:a.b.c.d/nnn) is not accepted; write the IPv4 network a.b.c.d/nn (prefix length minus 96)'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_mapped_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host GLOB '*.*' AND lower(host) GLOB '*:ffff:*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:a.b.c.d/nnn) is not accepted; write the IPv4 network a.b.c.d/nn (prefix length minus 96)'); END;

-- IPv4 shape of the host part ---------------------------------------------

CREATE TRIGGER allowed_networks_cidr_ipv4_parts_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*'
                 AND (length(host) - length(replace(host, '.', '')) <> 3 OR '.' || host || '.' GLOB '*..*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 network is four numbers separated by dots, then /prefix; write 10.0.0.0/8, not 10/8'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_parts_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*'
                 AND (length(host) - length(replace(host, '.', '')) <> 3 OR '.' || host || '.' GLOB '*..*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 network is four numbers separated by dots, then /prefix; write 10.0.0.0/8, not 10/8'); END;

CREATE TRIGGER allowed_networks_cidr_ipv4_leading_zero_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*' AND '.' || host || '.' GLOB '*.0[0-9]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: leading zeros in an IPv4 address are not accepted; write 10.0.0.0/8, not 010.000.000.000/8'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_leading_zero_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*' AND '.' || host || '.' GLOB '*.0[0-9]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: leading zeros in an IPv4 address are not accepted; write 10.0.0.0/8, not 010.000.000.000/8'); END;

CREATE TRIGGER allowed_networks_cidr_ipv4_range_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*'
                 AND ('.' || host || '.' GLOB '*.25[6-9].*' OR '.' || host || '.' GLOB '*.2[6-9][0-9].*'
                      OR '.' || host || '.' GLOB '*.[3-9][0-9][0-9].*' OR host GLOB '*[0-9][0-9][0-9][0-9]*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 number is 0 to 255; write 192.0.2.0/24'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_range_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host NOT GLOB '*[^0-9.]*'
                 AND ('.' || host || '.' GLOB '*.25[6-9].*' OR '.' || host || '.' GLOB '*.2[6-9][0-9].*'
                      OR '.' || host || '.' GLOB '*.[3-9][0-9][0-9].*' OR host GLOB '*[0-9][0-9][0-9][0-9]*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 number is 0 to 255; write 192.0.2.0/24'); END;

-- IPv6 shape of the host part ---------------------------------------------

CREATE TRIGGER allowed_networks_cidr_ipv6_group_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND host GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 group has at most four hex digits; write 2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_group_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND host GLOB '*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*'
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 group has at most four hex digits; write 2001:db8::/32'); END;

CREATE TRIGGER allowed_networks_cidr_ipv6_double_colon_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND (host GLOB '*::*::*' OR host GLOB '*:::*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 has at most one :: and never :::; write 2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_double_colon_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND (host GLOB '*::*::*' OR host GLOB '*:::*')
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 has at most one :: and never :::; write 2001:db8::/32'); END;

CREATE TRIGGER allowed_networks_cidr_ipv6_colons_insert BEFORE INSERT ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND length(host) - length(replace(host, ':', '')) NOT BETWEEN 2 AND 7
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 has 2 to 7 colons; write eight groups (2001:db8:0:0:0:0:0:0/32) or shorten zeros with :: (2001:db8::/32)'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_colons_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN (SELECT host GLOB '*:*' AND host NOT GLOB '*[^0-9a-f:]*'
                 AND length(host) - length(replace(host, ':', '')) NOT BETWEEN 2 AND 7
            FROM (SELECT substr(NEW.cidr, 1, instr(NEW.cidr || '/', '/') - 1) AS host))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: IPv6 has 2 to 7 colons; write eight groups (2001:db8:0:0:0:0:0:0/32) or shorten zeros with :: (2001:db8::/32)'); END;

-- The prefix length, after the first '/' -----------------------------------

-- A leading zero: /08, /00.
CREATE TRIGGER allowed_networks_cidr_prefix_leading_zero_insert BEFORE INSERT ON allowed_networks
    WHEN NEW.cidr GLOB '*/*'
     AND (SELECT bits GLOB '0?*' FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: a leading zero in the prefix length is not accepted; write /8, not /08'); END;
CREATE TRIGGER allowed_networks_cidr_prefix_leading_zero_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN NEW.cidr GLOB '*/*'
     AND (SELECT bits GLOB '0?*' FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: a leading zero in the prefix length is not accepted; write /8, not /08'); END;

-- IPv4 (no colon before the /): more than 32.
CREATE TRIGGER allowed_networks_cidr_ipv4_prefix_length_insert BEFORE INSERT ON allowed_networks
    WHEN NEW.cidr GLOB '*/*' AND NEW.cidr NOT GLOB '*:*/*'
     AND (SELECT CAST(bits AS INTEGER) > 32 FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 prefix length is 0 to 32; write 192.0.2.0/24'); END;
CREATE TRIGGER allowed_networks_cidr_ipv4_prefix_length_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN NEW.cidr GLOB '*/*' AND NEW.cidr NOT GLOB '*:*/*'
     AND (SELECT CAST(bits AS INTEGER) > 32 FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv4 prefix length is 0 to 32; write 192.0.2.0/24'); END;

-- IPv6 (a colon before the /): more than 128.
CREATE TRIGGER allowed_networks_cidr_ipv6_prefix_length_insert BEFORE INSERT ON allowed_networks
    WHEN NEW.cidr GLOB '*:*/*'
     AND (SELECT CAST(bits AS INTEGER) > 128 FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 prefix length is 0 to 128; write 2001:db8::/32'); END;
CREATE TRIGGER allowed_networks_cidr_ipv6_prefix_length_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN NEW.cidr GLOB '*:*/*'
     AND (SELECT CAST(bits AS INTEGER) > 128 FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: an IPv6 prefix length is 0 to 128; write 2001:db8::/32'); END;

-- Empty, or not only digits: 10.0.0.0/, /-1, a netmask (/255.0.0.0), a second /.
CREATE TRIGGER allowed_networks_cidr_prefix_number_insert BEFORE INSERT ON allowed_networks
    WHEN NEW.cidr GLOB '*/*'
     AND (SELECT bits = '' OR bits GLOB '*[^0-9]*' FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: the prefix length after / is a number, not a netmask; write 192.0.2.0/24'); END;
CREATE TRIGGER allowed_networks_cidr_prefix_number_update BEFORE UPDATE OF cidr ON allowed_networks
    WHEN NEW.cidr GLOB '*/*'
     AND (SELECT bits = '' OR bits GLOB '*[^0-9]*' FROM (SELECT substr(NEW.cidr, instr(NEW.cidr, '/') + 1) AS bits))
BEGIN SELECT RAISE(ABORT, 'allowed_networks.cidr: the prefix length after / is a number, not a netmask; write 192.0.2.0/24'); END;
