# tls = "required" on a POP3 listener (Dovecot's ssl = required): before STLS
# only CAPA, STLS and QUIT are served; CAPA offers no USER and no SASL; USER,
# APOP and AUTH get -ERR [AUTH]. The greeting carries no APOP timestamp (it
# would invite APOP in clear, and STLS brings no new greeting: RFC 2595 §4),
# so APOP is not available on this listener at all. After the handshake a
# USER/PASS login works.
@protocol pop3
@listener tls=required
@user alice secret
S: +OK popgate POP3 server ready
C: CAPA
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: STLS
S: IMPLEMENTATION popgate
S: .
C: USER alice
S: -ERR [AUTH] Must issue an STLS command first
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: -ERR [AUTH] Must issue an STLS command first
C: APOP alice 0123456789abcdef0123456789abcdef
S: -ERR [AUTH] Must issue an STLS command first
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
C: APOP alice 0123456789abcdef0123456789abcdef
S: -ERR [AUTH] APOP is not available on this server
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
