# RFC 1939 §7 APOP failures: malformed arguments (the digest is 32 hex
# digits), a user without a shared secret and a wrong secret get the same
# [AUTH] failure; then the right secret logs in.
@protocol pop3
@user alice secret
@user bob secret shared
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: APOP bob
S: -ERR APOP needs a user name and a 32-digit hex digest
C: APOP bob 0123
S: -ERR APOP needs a user name and a 32-digit hex digest
C! apop alice secret
S: -ERR [AUTH] Authentication failed.
C! apop bob wrong
S: -ERR [AUTH] Authentication failed.
C! apop bob secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
