# RFC 5034 AUTH CRAM-MD5 (RFC 2195): the challenge is a unique
# "<...@gw.test>" in base64, the answer base64("user " + HMAC-MD5 hex). A user
# without a shared secret (alice) and a wrong secret fail alike; bob logs in.
@protocol pop3
@user alice secret
@user bob secret shared
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH CRAM-MD5
S~ \+ [A-Za-z0-9+/]+=*
C! cram alice secret
S: -ERR [AUTH] Authentication failed.
C: AUTH CRAM-MD5
S~ \+ [A-Za-z0-9+/]+=*
C! cram bob wrong
S: -ERR [AUTH] Authentication failed.
C: AUTH CRAM-MD5
S~ \+ [A-Za-z0-9+/]+=*
C! cram bob secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
