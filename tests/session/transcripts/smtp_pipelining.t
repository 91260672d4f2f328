# RFC 2920 §3.1 PIPELINING: MAIL, RCPT, RCPT and DATA in one write; the
# replies come in order (one refused recipient), the 354 last; then the
# message, then QUIT pipelined behind the final dot.
@protocol smtp
@user alice secret
@user bob secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<a@example.org>
C: RCPT TO:<alice@gw.test>
C: RCPT TO:<x@example.org>
C: RCPT TO:<bob@gw.test>
C: DATA
S: 250 2.1.0 Ok
S: 250 2.1.5 Ok
S: 554 5.7.1 <x@example.org>: Relay access denied
S: 250 2.1.5 Ok
S: 354 End data with <CR><LF>.<CR><LF>
C: Subject: pipelined
C:
C: Body.
C: .
C: QUIT
S~ 250 2\.0\.0 Ok: queued as [0-9A-F]{12}
S: 221 2.0.0 Bye
=closed
