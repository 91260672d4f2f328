# RFC 3207 §4.2: after STARTTLS and the handshake the session starts over: no
# greeting, EHLO required again (MAIL is out of sequence), EHLO no longer lists
# STARTTLS, a second STARTTLS is refused; AUTH then works.
@protocol smtp
@listener tls=starttls
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
C: STARTTLS now
S: 501 5.5.4 Syntax: STARTTLS
C: STARTTLS
S: 220 2.0.0 Ready to start TLS
C! starttls
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: send HELO/EHLO first
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: STARTTLS
S: 503 5.5.1 Error: TLS already active
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
