# RFC 2595 §4: STLS, the TLS handshake, no new greeting; the session stays in
# AUTHORIZATION, CAPA no longer lists STLS and a second STLS is refused.
@protocol pop3
@listener tls=starttls
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: STLS
S: +OK Begin TLS negotiation
C! starttls
C: CAPA
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: USER
S: SASL PLAIN LOGIN CRAM-MD5
S: IMPLEMENTATION popgate
S: .
C: STLS
S: -ERR Command not permitted when TLS active
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
