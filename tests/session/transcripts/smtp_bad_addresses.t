# RFC 5321 §4.1.2 path syntax and §4.1.1.11 parameters: a bad sender (501
# 5.1.7), the null reverse-path accepted, RCPT TO:<> refused (501 5.1.3),
# unknown MAIL and RCPT parameters (555 5.5.4).
@protocol smtp
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<no domain@example.org>
S: 501 5.1.7 Bad sender address syntax
C: MAIL FROM:<a@example.org> FOO=BAR
S: 555 5.5.4 Unsupported option: FOO
C: MAIL FROM:<>
S: 250 2.1.0 Ok
C: RCPT TO:<>
S: 501 5.1.3 Bad recipient address syntax
C: RCPT TO:<alice@gw.test> NOTIFY=NEVER
S: 555 5.5.4 Unsupported option: NOTIFY
C: RCPT TO:<Postmaster>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
