# RFC 5034 §4: a response that is not base64 fails the exchange with -ERR;
# well-formed base64 that is not a valid PLAIN message ("=" is the empty
# response, "alice" has no NULs) is an authentication failure.
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH PLAIN !!!!
S: -ERR Invalid base64 data
C: AUTH LOGIN
S: + VXNlcm5hbWU6
C: abc
S: -ERR Invalid base64 data
C: AUTH PLAIN =
S: -ERR [AUTH] Authentication failed.
C: AUTH PLAIN YWxpY2U=
S: -ERR [AUTH] Authentication failed.
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
