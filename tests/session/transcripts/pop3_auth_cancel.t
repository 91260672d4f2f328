# RFC 5034 §4: the client cancels an exchange with "*" at any challenge; the
# session stays in AUTHORIZATION and a later AUTH works.
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH LOGIN
S: + VXNlcm5hbWU6
C: *
S: -ERR Authentication cancelled
C: AUTH LOGIN
S: + VXNlcm5hbWU6
C: YWxpY2U=
S: + UGFzc3dvcmQ6
C: *
S: -ERR Authentication cancelled
C: AUTH PLAIN
S~ \+[ ]
C: *
S: -ERR Authentication cancelled
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
