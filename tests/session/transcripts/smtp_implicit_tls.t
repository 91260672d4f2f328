# RFC 8314 implicit TLS (SMTPS, submissions): greeting after the handshake,
# no STARTTLS in EHLO; an auth_required listener relays after AUTH.
@protocol smtp
@listener tls=implicit auth_required=yes
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
