# auth.plaintext = "never": USER/PASS, AUTH PLAIN and AUTH LOGIN are refused
# with [AUTH] (RFC 3206), CAPA omits USER and lists only CRAM-MD5 under SASL;
# APOP and CRAM-MD5 still work.
@protocol pop3
@config auth.plaintext = "never"
@user bob secret shared
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: CAPA
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: SASL CRAM-MD5
S: IMPLEMENTATION popgate
S: .
C: USER bob
S: -ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.
C: PASS secret
S: -ERR USER first
C: AUTH PLAIN AGJvYgBzZWNyZXQ=
S: -ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.
C: AUTH LOGIN
S: -ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.
C: AUTH
S: +OK Supported mechanisms follow
S: CRAM-MD5
S: .
C! apop bob secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
