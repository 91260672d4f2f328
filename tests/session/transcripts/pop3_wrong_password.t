# RFC 1939 §7 USER/PASS with a wrong password: the RFC 2449 [AUTH] response
# code, and the USER is forgotten (PASS again needs a new USER). An unknown
# user gets +OK to USER and the same failure to PASS (no enumeration).
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: USER alice
S: +OK
C: PASS wrong
S: -ERR [AUTH] Authentication failed.
C: PASS secret
S: -ERR USER first
C: USER nosuch
S: +OK
C: PASS secret
S: -ERR [AUTH] Authentication failed.
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
