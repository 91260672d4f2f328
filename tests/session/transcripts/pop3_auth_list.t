# RFC 5034 §4: AUTH without a mechanism lists the mechanisms (multi-line, as
# Dovecot and most clients expect); an unknown mechanism is refused.
@protocol pop3
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH
S: +OK Supported mechanisms follow
S: PLAIN
S: LOGIN
S: CRAM-MD5
S: .
C: AUTH GSSAPI
S: -ERR Unsupported authentication mechanism
C: QUIT
S: +OK popgate POP3 server signing off
=closed
