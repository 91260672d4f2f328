# RFC 4954 §4: AUTH after a successful AUTH is 503; AUTH inside a
# transaction is out of sequence.
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
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 503 5.5.1 Error: MAIL transaction in progress
C: RSET
S: 250 2.0.0 Ok
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 503 5.5.1 Error: already authenticated
C: QUIT
S: 221 2.0.0 Bye
=closed
