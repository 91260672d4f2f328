# tls = "required" (a submission port as Postfix's smtpd_tls_security_level =
# encrypt): before STARTTLS only EHLO/HELO, STARTTLS, NOOP, RSET and QUIT are
# served, AUTH is not advertised, everything else gets 530 5.7.0 whatever the
# state (RCPT without MAIL, DATA without RCPT: 530, not 503); after the
# handshake AUTH is offered and the session works.
@protocol smtp
@listener tls=required auth_required=yes
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 STARTTLS
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 530 5.7.0 Must issue a STARTTLS command first
C: MAIL FROM:<alice@gw.test>
S: 530 5.7.0 Must issue a STARTTLS command first
C: RCPT TO:<alice@gw.test>
S: 530 5.7.0 Must issue a STARTTLS command first
C: DATA
S: 530 5.7.0 Must issue a STARTTLS command first
C: VRFY alice
S: 530 5.7.0 Must issue a STARTTLS command first
C: NOOP
S: 250 2.0.0 Ok
C: RSET
S: 250 2.0.0 Ok
C: STARTTLS
S: 220 2.0.0 Ready to start TLS
C! starttls
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
