# RFC 6409 submission (auth_required listener): without AUTH, MAIL is refused
# with 530 5.7.0 (RFC 4954 §6), whatever the recipients would be; after AUTH
# it relays and delivers locally.
@protocol smtp
@listener tls=starttls auth_required=yes
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-STARTTLS
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<alice@gw.test>
S: 530 5.7.0 Authentication required
C: RCPT TO:<alice@gw.test>
S: 503 5.5.1 Error: need MAIL command
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 250 2.1.5 Ok
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
