# RFC 1939 §3: keywords are 3 or 4 characters, case-insensitive; anything else
# is answered -ERR and the session goes on.
@protocol pop3
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: XYZZY
S: -ERR Unknown command
C: HELO gw.test
S: -ERR Unknown command
C: US alice
S: -ERR Unknown command
C: noop
S: -ERR Command not valid in this state
C: QUIT
S: +OK popgate POP3 server signing off
=closed
