# RFC 5034 §4 AUTH with an initial response, RFC 4616 PLAIN:
# base64("\0alice\0wrong") fails, base64("\0alice\0secret") logs in.
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH PLAIN AGFsaWNlAHdyb25n
S: -ERR [AUTH] Authentication failed.
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
