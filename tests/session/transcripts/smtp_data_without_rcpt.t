# RFC 5321 §3.3: DATA needs at least one accepted recipient: without MAIL
# (503), without RCPT (503), and after refused recipients only (554, as
# §3.3 says for "no valid recipients").
@protocol smtp
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: DATA
S: 503 5.5.1 Error: need MAIL command
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: DATA
S: 503 5.5.1 Error: need RCPT command
C: RCPT TO:<nosuch@gw.test>
S: 550 5.1.1 <nosuch@gw.test>: Recipient address rejected: User unknown
C: DATA
S: 554 5.5.1 Error: no valid recipients
C: QUIT
S: 221 2.0.0 Bye
=closed
