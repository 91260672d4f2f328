# RFC 1939 §3: each command is valid in one state only. TRANSACTION commands
# before login, AUTHORIZATION commands after it.
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: STAT
S: -ERR Command not valid in this state
C: LIST
S: -ERR Command not valid in this state
C: RETR 1
S: -ERR Command not valid in this state
C: DELE 1
S: -ERR Command not valid in this state
C: NOOP
S: -ERR Command not valid in this state
C: RSET
S: -ERR Command not valid in this state
C: UIDL
S: -ERR Command not valid in this state
C: TOP 1 1
S: -ERR Command not valid in this state
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: USER alice
S: -ERR Command not valid in this state
C: PASS secret
S: -ERR Command not valid in this state
C: APOP alice 0123456789abcdef0123456789abcdef
S: -ERR Command not valid in this state
C: AUTH PLAIN
S: -ERR Command not valid in this state
C: NOOP
S: +OK
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
