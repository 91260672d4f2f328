# An apop-only user (popgate user add --apop-only): USER takes her name as
# any other; PASS, AUTH PLAIN and AUTH CRAM-MD5 are refused with the answer
# a wrong password gets (a distinct one would tell which names exist); APOP
# (RFC 1939 §7) logs in.
@protocol pop3
@user carol secret apop-only
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: USER carol
S: +OK
C: PASS secret
S: -ERR [AUTH] Authentication failed.
C: AUTH PLAIN AGNhcm9sAHNlY3JldA==
S: -ERR [AUTH] Authentication failed.
C: AUTH CRAM-MD5
S~ \+ [A-Za-z0-9+/]+=*
C! cram carol secret
S: -ERR [AUTH] Authentication failed.
C! apop carol secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
