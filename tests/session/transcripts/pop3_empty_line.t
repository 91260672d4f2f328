# An empty command line gets -ERR and the session goes on. A bare LF ends a
# command line like CRLF does (lenient, as Dovecot is; README "Behaviour").
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C< \r\n
S: -ERR Empty command
C< \n
S: -ERR Empty command
C< USER alice\n
S: +OK
C< PASS secret\n
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
