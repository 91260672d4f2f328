# SMTP smuggling (README "Behaviour"): a bare LF in the message body fails the
# whole message with 550 5.5.2 after the real CRLF.CRLF (here the ".\n" is
# not taken for an end of data); nothing is delivered, the session stays in
# step and the next transaction works.
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
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: Subject: smuggling
C:
C< first\n.\nMAIL FROM:<evil@example.org>\r\n
C: .
S: 550 5.5.2 Error: bare <CR> or <LF> in message data
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
