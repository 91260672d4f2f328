# limits.max_bad_commands: the third bad command in a session is answered
# "-ERR too many errors" and the server closes the connection.
@protocol pop3
@config limits.max_bad_commands = 3
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: XYZZY
S: -ERR Unknown command
C: STAT
S: -ERR Command not valid in this state
C: XYZZY
S: -ERR too many errors
=closed
