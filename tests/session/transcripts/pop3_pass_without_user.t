# RFC 1939 §7: PASS only after a successful USER; USER needs a name. QUIT in
# the AUTHORIZATION state ends the session without an UPDATE (§6).
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: PASS secret
S: -ERR USER first
C: USER
S: -ERR USER needs a user name
C: PASS secret
S: -ERR USER first
C: QUIT
S: +OK popgate POP3 server signing off
=closed
