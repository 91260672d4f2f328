# RFC 2449 §5 CAPA before login (AUTHORIZATION: USER, STLS and SASL offered)
# and after it (TRANSACTION: only what applies there). Commands are
# case-insensitive (RFC 1939 §3).
@protocol pop3
@listener tls=starttls
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: CAPA
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: USER
S: STLS
S: SASL PLAIN LOGIN CRAM-MD5
S: IMPLEMENTATION popgate
S: .
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: capa
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: IMPLEMENTATION popgate
S: .
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
