# RFC 4954: after SMTP AUTH the session may relay; with no upstream the
# message goes to the relay drop folder and is acknowledged with a queue id.
# EHLO after AUTH no longer offers AUTH.
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
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250 ENHANCEDSTATUSCODES
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: Subject: relayed
C:
C: Hello out there.
C: .
S~ 250 2\.0\.0 Ok: queued as [0-9A-F]{12}
C: QUIT
S: 221 2.0.0 Bye
=closed
